"""Client-side load balancing over several server replicas.

gRPC keeps one HTTP/2 connection per server and sends every call on it, so a plain
`host:port` target behind a TCP load balancer pins a client to one replica. Balancing in
the client (gRPC's `round_robin` policy) spreads *calls* over every address:

* `127.0.0.1:50051,127.0.0.1:50052` (IP literals, comma separated) -> `ipv4:...` target;
* `dns:///avatar-grpc.games.svc.cluster.local:50051` -> every address the name resolves to
  (a Kubernetes headless Service returns one per ready pod), re-resolved on reconnects;
* anything else (one `host:port`) is left alone (gRPC's default `pick_first`).

For the balanced forms the channel also gets a service config with
* `round_robin`;
* client-side health checking on the gRPC health service (a replica that reports
  NOT_SERVING, e.g. one draining after SIGTERM, gets no new calls);
* a retry policy on UNAVAILABLE: a call that reached no live replica (a replica that was
  just killed) is sent again to another one. gRPC retries only before the server sent
  response headers, so a stream is never delivered twice.
"""

from __future__ import annotations

import ipaddress
import json

SERVICES = ("moeavatar.v1.AvatarService", "grpc.health.v1.Health")


def service_config(max_attempts: int = 5, health_check: bool = True) -> dict:
    """The gRPC service config used for balanced targets (JSON-able dict)."""
    config: dict = {
        "loadBalancingConfig": [{"round_robin": {}}],
        "methodConfig": [{
            "name": [{"service": s} for s in SERVICES],
            "retryPolicy": {"maxAttempts": max_attempts, "initialBackoff": "0.1s", "maxBackoff": "1s",
                            "backoffMultiplier": 2, "retryableStatusCodes": ["UNAVAILABLE"]},
        }],
    }
    if health_check:
        config["healthCheckConfig"] = {"serviceName": ""}
    return config


def _ip_family(address: str) -> str:
    """'ipv4' or 'ipv6' for an `IP:port` / `[IPv6]:port` literal; ValueError for names."""
    host, sep, port = address.strip().rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError(f"--target: {address!r} is not host:port")
    try:
        ip = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        raise ValueError(f"--target: several addresses must be IP literals ({host!r} is a name); for a name "
                         "with several addresses (a headless Service) use dns:///NAME:PORT") from None
    return f"ipv{ip.version}"


def balanced_target(target: str) -> str | None:
    """The gRPC target to balance over, or None when `target` names a single server."""
    if target.startswith("dns:"):
        return target
    if target.startswith(("ipv4:", "ipv6:")):
        return target if "," in target else None
    if "," not in target:
        return None
    addresses = [a.strip() for a in target.split(",") if a.strip()]
    families = {_ip_family(a) for a in addresses}
    if len(families) > 1:
        raise ValueError("--target: mix of IPv4 and IPv6 addresses; gRPC needs one family per target")
    return f"{families.pop()}:{','.join(addresses)}"


def channel_args(target: str, options: list[tuple[str, object]] | None = None,
                 max_attempts: int = 5) -> tuple[str, list[tuple[str, object]]]:
    """(target, options) for grpc.insecure_channel / secure_channel; a service config
    already in `options` wins over ours."""
    options = list(options or [])
    balanced = balanced_target(target)
    if balanced is None:
        return target, options
    keys = {key for key, _ in options}
    if "grpc.service_config" not in keys:
        options.append(("grpc.service_config", json.dumps(service_config(max_attempts))))
    if "grpc.enable_retries" not in keys:
        options.append(("grpc.enable_retries", 1))
    return balanced, options
