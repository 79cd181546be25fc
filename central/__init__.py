"""The central distribution's folder; a package only so its tests import as `central.tests`."""
