"""torchrun with gnrepro's error lines: ``python -m gnrepro.torchrun <torchrun options> -m gnrepro.train ...``.

The same options and behaviour as ``torchrun`` (``torch.distributed.run``, called as a library), for
one node or several (``--nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST:PORT --rdzv-id NAME``
on every node; docs/clusters.md). What differs is how it fails:

- a rendezvous that does not complete (a node never started, a wrong endpoint) is one line,
  ``gnrepro: error: ...`` naming the endpoint, the nodes asked for and the timeout, and exit code 2,
  instead of torch's traceback; the timeout is torchrun's ``--rdzv-conf join_timeout=SECONDS``
  (600 s unless given);
- a failed training process has already printed its own line (``gnrepro: error: ...`` or
  ``gnrepro: stopped: ...``); the launcher adds one line naming the process and exits with that
  process's code (2 for a mistake, 3 for a preempted run that saved its checkpoint), where
  torchrun prints a report block and exits 1.
"""
from __future__ import annotations

import logging
import sys

from gnrepro.errors import EXIT_FAILED, EXIT_STOPPED, EXIT_USER, error_line

DEFAULT_JOIN_TIMEOUT = 600  # torch.distributed.elastic's default join_timeout, in seconds


def _conf(rdzv_conf: str) -> dict[str, str]:
    """torchrun's ``--rdzv-conf k1=v1,k2=v2`` as a dict."""
    return dict(item.split("=", 1) for item in (rdzv_conf or "").split(",") if "=" in item)


def rendezvous_message(args, err: Exception) -> str:
    from torch.distributed.elastic.rendezvous.api import RendezvousConnectionError, RendezvousTimeoutError

    where = f"--rdzv-endpoint {args.rdzv_endpoint or '(none)'} (--rdzv-id {args.rdzv_id})"
    if isinstance(err, RendezvousTimeoutError):
        timeout = _conf(args.rdzv_conf).get("join_timeout", DEFAULT_JOIN_TIMEOUT)
        return (f"rendezvous at {where} timed out after {timeout} s: --nnodes {args.nnodes} asked for more nodes "
                f"than joined; start the same command on the other node(s) with the same --rdzv-endpoint and "
                f"--rdzv-id, or give them longer with --rdzv-conf join_timeout=SECONDS")
    if isinstance(err, RendezvousConnectionError):
        return (f"cannot reach the rendezvous at {where}: check that the endpoint's host and port are right and "
                f"reachable from this node ({err or type(err).__name__})")
    return f"rendezvous at {where} failed: {err or type(err).__name__}"


def main(argv: list[str] | None = None) -> int:
    from torch.distributed import run as torchrun
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError

    args = torchrun.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        torchrun.run(args)
    except RendezvousError as err:
        print(error_line(rendezvous_message(args, err)), file=sys.stderr)
        return EXIT_USER
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = failure.exitcode if failure.exitcode > 0 else EXIT_FAILED
        how = f"exited with code {failure.exitcode}" if failure.exitcode >= 0 else f"was killed by {failure.signal_name()}"
        line = error_line(f"training process of rank {rank} (local rank {failure.local_rank}) {how}; "
                          f"its own message is above")
        if code == EXIT_STOPPED:  # preempted: its checkpoint is saved, relaunching resumes it
            line = line.replace("gnrepro: error:", "gnrepro: stopped:", 1)
        print(line, file=sys.stderr)
        return code
    return 0


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
