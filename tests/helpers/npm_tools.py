"""The independent readers from npm the splat tests check files with: PlayCanvas's SplatTransform
(converts between splat formats) and the Khronos glTF validator. `python build.py test` installs
them into .npm-tools/; a missing one fails the test that needs it, loudly."""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
NPM_TOOLS = ROOT / ".npm-tools"
SPLAT_TRANSFORM = NPM_TOOLS / "node_modules" / ".bin" / "splat-transform"
VALIDATOR = NPM_TOOLS / "node_modules" / "gltf-validator"

_VALIDATE = """
const validator = require(process.argv[1]);
const fs = require('fs');
validator.validateBytes(new Uint8Array(fs.readFileSync(process.argv[2])), {maxIssues: 100})
  .then((report) => console.log(JSON.stringify(report)))
  .catch((error) => { console.error(String(error)); process.exit(2); });
"""


def _require(path: Path, what: str) -> None:
    if shutil.which("node") is None or not path.exists():
        raise RuntimeError(f"{what} is missing ({path}); run `python build.py test` (or `python build.py setup`), "
                           "which installs Node.js and the npm packages the tests read splat files with")


def splat_transform(*args: str | Path, timeout: float = 300) -> str:
    """Run SplatTransform's command line (`-w` overwrite, quiet) and return its output; raise on failure."""
    _require(SPLAT_TRANSFORM, "SplatTransform (@playcanvas/splat-transform)")
    done = subprocess.run([str(SPLAT_TRANSFORM), "-w", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    if done.returncode != 0:
        raise AssertionError(f"splat-transform {' '.join(map(str, args))} failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


def validate_gltf(path: Path) -> dict[str, Any]:
    """The Khronos glTF validator's report on `path` (its JSON, as a dict)."""
    _require(VALIDATOR, "the Khronos glTF validator (gltf-validator)")
    done = subprocess.run(["node", "-e", _VALIDATE, str(VALIDATOR), str(path)], capture_output=True, text=True,
                          timeout=300)
    if done.returncode != 0:
        raise AssertionError(f"gltf-validator could not read {path}:\n{done.stderr}")
    report: dict[str, Any] = json.loads(done.stdout)
    return report
