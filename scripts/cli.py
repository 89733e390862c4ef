"""The scripts' failure convention, the same as main.py's: a user error ends in one line
`error: ...` on stderr and exit status 1 (Ctrl-C: 130); HGM_TRACEBACK=1 re-raises for the traceback."""
from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable


def one_line_errors(main: Callable[..., int]) -> Callable[..., int]:
    """Wrap a script's main(argv) so that every failure is one line on stderr and a non-zero return."""
    @functools.wraps(main)
    def wrapper(*args, **kwargs) -> int:
        from datasets.errors import HGMError
        try:
            return main(*args, **kwargs)
        except KeyboardInterrupt:
            sys.stderr.write("error: interrupted\n")
            return 130
        except Exception as e:
            if os.environ.get("HGM_TRACEBACK"):
                raise
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            prefix = "error" if isinstance(e, (HGMError, OSError)) else f"error ({type(e).__name__})"
            sys.stderr.write(f"{prefix}: {msg}\n")
            return 1
    return wrapper
