"""Tests of the central ticket service, against a real Mosquitto (and PostgreSQL)."""
