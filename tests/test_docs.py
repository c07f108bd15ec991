"""docs/PROTOCOL.md names, for each item of the paper's protocol, the test that pins it: every test it
names must exist, so the table cannot point at a test that was renamed or removed."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_test_named_in_the_protocol_table_exists():
    text = (ROOT / "docs" / "PROTOCOL.md").read_text()
    named = re.findall(r"`?((?:\w+/)?test_\w+\.py)(?:::(\w+))?", text)
    assert len(named) >= 15
    for file, test in named:
        path = ROOT / "tests" / file
        assert path.is_file(), f"docs/PROTOCOL.md names {file}, which does not exist"
        if test:
            assert re.search(rf"^def {test}\(", path.read_text(), re.M), f"docs/PROTOCOL.md names {file}::{test}"
