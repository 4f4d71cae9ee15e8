"""How fast the sink's long poll (GET /api/v1/wait) answers after a message is accepted.

For each round: a client waits on /api/v1/wait for a unique subject, another sends that
message over SMTP; latency = response of the wait minus the SMTP 250 of the final dot
(the moment the sender knows the mail is stored). Target: within 50 ms (issue 15).

    .venv/bin/python bench/sink_wait.py [--rounds 50] [--preload 2000]
"""

from __future__ import annotations

import argparse
import smtplib
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tui_mail.testing import MailSink  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=50)
    ap.add_argument("--preload", type=int, default=0, help="messages in the sink before measuring")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as d, MailSink(Path(d) / "relay") as sink:
        lat = []
        with smtplib.SMTP(*sink.smtp) as s:
            for i in range(args.preload):
                s.sendmail("app@bench.test", [f"p{i}@anywhere.test"],
                           f"Subject: preload {i}\r\n\r\nfiller\r\n".encode())
            for i in range(args.rounds):
                got = {}

                def wait(i=i, got=got):
                    sink.wait_for(f"subject:round-{i}-x", timeout=10)
                    got["t"] = time.perf_counter()

                t = threading.Thread(target=wait)
                t.start()
                time.sleep(0.05)          # the wait is parked before the mail is sent
                s.sendmail("app@bench.test", [f"u{i}@anywhere.test"],
                           f"Subject: round-{i}-x\r\n\r\nbody\r\n".encode())
                sent = time.perf_counter()
                t.join()
                lat.append((got["t"] - sent) * 1000)
    lat.sort()
    print(f"{'preload':>8} {'rounds':>8} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    print(f"{args.preload:>8} {len(lat):>8} {statistics.median(lat):>10.1f} {lat[int(len(lat) * 0.95) - 1]:>8.1f} {lat[-1]:>8.1f}")


if __name__ == "__main__":
    main()
