"""The container's health check: exits 0 when this container's `conveyor` answers /healthz,
on CONVEYOR_PORT (`conveyor serve`) or CONVEYOR_METRICS_PORT (`conveyor worker`)."""

import os
import urllib.request

PORT_VARIABLES = ("CONVEYOR_PORT", "CONVEYOR_METRICS_PORT")


def answers(port: str) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


if __name__ == "__main__":
    ports = [os.environ[name] for name in PORT_VARIABLES if os.environ.get(name)]
    raise SystemExit(0 if any(answers(port) for port in ports) else 1)
