"""Fault campaign (issue 17): random bad configurations pushed to a gateway under load.

A real `gateway run` process publishes telemetry from simulated meters (60 readings a
second by default) to a real Mosquitto and trusts one configuration key; this script
is the platform: `community_central.fleet` signs and pushes `--rounds` bad
configurations, each drawn at random from the kinds below, waiting for each outcome.
Expected: every one refused (nothing changed) or rolled back by the gateway itself;
after each, the gateway is online again and reports its original configuration; at the
end every seq the gateway gave (telemetry and events, one counter) has arrived, none
missing.  Figures: outcomes per kind, time to each outcome (p50, max), the gateway's
reachability, seq gaps; the baseline is the same gateway's good push in the same run.

    python -m scripts.fleet_campaign [--rounds 100] [--seed 17] [--trial-s 5]
"""

from __future__ import annotations

import argparse
import copy
import json
import random
import sys
import tempfile
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from community_central.broker import BrokerSettings
from community_central.fleet import Fleet, FleetLink, PushOutcome, Selector, desired_for
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from community_protocol.documents import dumps
from community_protocol.ed25519 import generate_key, load_private_key
from community_protocol.ids import Identity
from community_protocol.topics import Topics
from tests.harness import GatewayProc, Subscriber, simulated_meter
from tests.peers import Mosquitto, free_port, wait_for

Config = dict[str, Any]


def _set(path: str, value: Any) -> Callable[[Config, Path], Config]:
    def change(cfg: Config, _work: Path) -> Config:
        node: Any = cfg
        *head, last = path.split(".")
        for part in head:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[last] = value
        return cfg

    return change


def _crash(cfg: Config, work: Path) -> Config:
    # Valid, but SQLite cannot open a folder: the process dies at start.
    folder = work / f"not-a-db-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    cfg["outbox"]["path"] = str(folder)
    return cfg


def _unreachable(cfg: Config, _work: Path) -> Config:
    cfg["broker"]["url"] = f"mqtt://127.0.0.1:{free_port()}"
    return cfg


def _tls_to_plain(cfg: Config, _work: Path) -> Config:
    # TLS against the plain listener: the handshake fails at every attempt.
    cfg["broker"]["url"] = cfg["broker"]["url"].replace("mqtt://", "mqtts://")
    return cfg


def _ca_not_pem(cfg: Config, work: Path) -> Config:
    junk = work / "junk-ca.pem"
    junk.write_text("not a certificate\n")
    cfg["broker"]["url"] = cfg["broker"]["url"].replace("mqtt://", "mqtts://")
    cfg["broker"]["tls"] = {"ca_file": str(junk)}
    return cfg


# Kind -> (change to the good config, how it is signed: ok / unsigned / stranger / tampered)
KINDS: dict[str, tuple[Callable[[Config, Path], Config], str]] = {
    "invalid value": (_set("devices.0.driver.rate_hz", -5), "ok"),
    "unknown key": (_set("helth", {"interval_s": 1}), "ok"),
    "wrong type": (_set("health.interval_s", "often"), "ok"),
    "no config key left": (_set("security.config_keys", []), "ok"),
    "secret file missing": (
        lambda c, w: _set("broker.password", {"file": "/nonexistent/pw"})(
            _set("broker.username", "gw")(c, w), w
        ),
        "ok",
    ),
    "TLS CA missing": (
        lambda c, w: _set("broker.tls", {"ca_file": "/nonexistent/ca.pem"})(_tls_to_plain(c, w), w),
        "ok",
    ),
    "TLS CA not PEM": (_ca_not_pem, "ok"),
    "unsigned": (_set("health.interval_s", 2), "unsigned"),
    "unknown signer": (_set("health.interval_s", 2), "stranger"),
    "tampered": (_set("health.interval_s", 2), "tampered"),
    "broker unreachable": (_unreachable, "ok"),
    "TLS handshake fails": (_tls_to_plain, "ok"),
    "crash at start": (_crash, "ok"),
}


def _raw_push(
    fleet: Fleet, identity: Identity, cfg: Config, key: Ed25519PrivateKey, how: str, wait_s: float
) -> PushOutcome:
    """Publish a document the fleet command would never make; wait for its report."""
    [view] = fleet.gateways(Selector.parse([f"{identity.site}/{identity.gateway}"]), listen_s=0.3)
    version = max(view.config_version or 0, view.desired_version or 0) + 1
    signer = Ed25519PrivateKey.generate() if how == "stranger" else key
    doc = desired_for(identity, cfg, version=version, key=signer, signed_by="campaign")
    if how == "unsigned":
        del doc["auth"]
    elif how == "tampered":
        doc["config"]["health"] = {"interval_s": 9}
    topics = Topics.of(fleet.broker.prefix, identity.site, identity.gateway)
    started = time.monotonic()
    with FleetLink(fleet.broker) as link:
        link.subscribe(topics.config_reported)
        link.publish(topics.config_desired, dumps(doc))
        deadline = started + wait_s
        while (msg := link.receive(deadline)) is not None:
            rep = json.loads(msg.payload)
            if rep.get("desired_version") == version and rep.get("result") != "testing":
                return PushOutcome(
                    identity.site, identity.gateway, version, rep["result"],
                    rep.get("reason", ""), seconds=time.monotonic() - started,
                )  # fmt: skip
    return PushOutcome(identity.site, identity.gateway, version, "no_answer", seconds=wait_s)


def _seqs(sub: Subscriber) -> set[int]:
    out = set()
    for m in sub.snapshot():
        if m.topic.endswith(("/telemetry", "/events")):
            seq = m.json().get("seq")
            if isinstance(seq, int):
                out.add(seq)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--trial-s", type=float, default=5.0)
    parser.add_argument("--meters", type=int, default=3)
    parser.add_argument("--rate-hz", type=float, default=20.0)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="fleet-campaign-") as tmp:
        work = Path(tmp)
        broker = Mosquitto(work / "broker", persistence=False)
        broker.start()
        private, public, _ = generate_key(work / "keys", "ops")
        key = load_private_key(private)
        prefix = f"c{uuid.uuid4().hex[:6]}/v1"
        identity = Identity("site-a", "gw-1")
        good: Config = {
            "version": 1,
            "site": {"id": identity.site},
            "gateway": {"id": identity.gateway},
            "broker": {"url": broker.url, "topic_prefix": prefix},
            "outbox": {"path": "outbox.db", "commit_interval_ms": 50},
            "clock": {"check": "trust"},
            "health": {"interval_s": 1},
            "security": {"config_keys": [str(public)], "config_trial_s": args.trial_s},
            "devices": [simulated_meter(f"m{i}", args.rate_hz) for i in range(args.meters)],
        }
        config = work / "gw" / "gateway.yaml"
        config.parent.mkdir()
        config.write_text(yaml.safe_dump(good, sort_keys=False))
        base = Topics(prefix, identity).base
        sub = Subscriber(broker.port, f"{base}/#").start()
        gw = GatewayProc(config).start()
        fleet = Fleet(BrokerSettings(broker.url, prefix), work / "fleet.db", settle_s=0.5)
        target = Selector.parse([f"{identity.site}/{identity.gateway}"])
        wait_s = args.trial_s + 60
        try:

            def online(version: int) -> bool:
                views = fleet.gateways(target, listen_s=0.3)
                return (
                    bool(views)
                    and views[0].state == "online"
                    and views[0].config_version == version
                )

            assert wait_for(lambda: online(0), 60), gw.log()[-3000:]
            # Baseline: a good change, applied (then it is the configuration to keep).
            base_cfg = copy.deepcopy(good)
            base_cfg["health"] = {"interval_s": 2}
            [baseline] = fleet.push(target, base_cfg, key, "campaign", wait_s=wait_s)
            assert baseline.ok, baseline
            running = baseline.version
            results: dict[str, Counter[str]] = defaultdict(Counter)
            times: dict[str, list[float]] = defaultdict(list)
            unreachable, wrong = 0, []
            started = time.monotonic()
            for n in range(args.rounds):
                kind = rng.choice(sorted(KINDS))
                change, how = KINDS[kind]
                cfg = change(copy.deepcopy(base_cfg), work)
                if how == "ok":
                    [outcome] = fleet.push(target, cfg, key, "campaign", wait_s=wait_s)
                else:
                    outcome = _raw_push(fleet, identity, cfg, key, how, wait_s)
                results[kind][outcome.result] += 1
                times[outcome.result].append(outcome.seconds)
                if outcome.result not in ("refused", "rolled_back"):
                    wrong.append(f"round {n + 1} {kind}: {outcome.result} {outcome.reason}")
                if not wait_for(lambda: online(running), 60):
                    unreachable += 1
                    wrong.append(f"round {n + 1} {kind}: not back online with version {running}")
                if (n + 1) % 10 == 0:
                    print(
                        f"    ... {n + 1} rounds, {time.monotonic() - started:.0f} s",
                        file=sys.stderr,
                    )
            elapsed = time.monotonic() - started
            # Every seq given must arrive: wait for the stream to catch up, then count gaps.
            wait_for(lambda: (s := _seqs(sub)) and len(s) == max(s) - min(s) + 1, 60)
            seqs = _seqs(sub)
            missing = (max(seqs) - min(seqs) + 1 - len(seqs)) if seqs else -1
        finally:
            if gw.running():
                gw.terminate()
            sub.stop()
            broker.kill()
    total = Counter[str]()
    for c in results.values():
        total.update(c)
    print(f"fleet campaign: {args.rounds} bad configurations, seed {args.seed}, trial {args.trial_s:g} s,"
          f" load {args.meters} meters x {args.rate_hz:g} Hz, {elapsed:.0f} s")  # fmt: skip
    print(f"    baseline (good change) applied in {baseline.seconds:.2f} s")
    for kind in sorted(results):
        print(f"    {kind:22} " + "  ".join(f"{r}={c}" for r, c in sorted(results[kind].items())))
    for result, ts in sorted(times.items()):
        ts.sort()
        print(f"    {result:12} n={len(ts):3}  p50 {ts[len(ts) // 2]:6.2f} s  max {ts[-1]:6.2f} s")
    print(f"    refused or rolled back: {total['refused'] + total['rolled_back']}/{args.rounds};"
          f" gateways unreachable: {unreachable}; seq received: {len(seqs)}, missing: {missing}")  # fmt: skip
    for line in wrong[:20]:
        print("    !! " + line)
    return 0 if not wrong and missing == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
