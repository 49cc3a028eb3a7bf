"""Write the `pincus` command: a launcher that starts Python without `site` (-S) and without the
script's directory on sys.path (-P), then finds pincus and PyYAML itself.

    python scripts/write_launcher.py OUT [SRC]      # SRC: this checkout's src/ (default)

pip's console-script wrapper runs the venv's full start-up: `site` reads the venv's .pth files
(setuptools' distutils hack imports a module of its own) before pincus's first line. The
launcher puts PYTHONPATH's entries first as Python does, then SRC and the venv's
site-packages (PyYAML, for the commands that print YAML), and calls the same
`pincus.cli.main:main` as the wrapper. scripts/setup.sh writes it over pip's wrapper.
"""

from __future__ import annotations

import os
import sys
import sysconfig
from pathlib import Path

LAUNCHER = """#!{python} -SP
# Written by scripts/write_launcher.py (scripts/setup.sh): pincus without site's start-up.
import sys
sys.path += [{src!r}, {site!r}]
from pincus.cli.main import main
main()
"""


def write(out: Path, src: Path) -> None:
    text = LAUNCHER.format(python=sys.executable, src=str(src.resolve()), site=sysconfig.get_path("purelib"))
    tmp = out.with_name(f".{out.name}.tmp")
    tmp.write_text(text)
    tmp.chmod(0o755)
    os.replace(tmp, out)


if __name__ == "__main__":
    default_src = Path(__file__).resolve().parent.parent / "src"
    write(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 else default_src)
