"""README.md must stay true: every environment variable the code reads is documented."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_every_environment_variable_is_documented():
    names = set()
    for path in [*ROOT.glob("safeface/*.py"), *ROOT.glob("engine/**/*.py"), *ROOT.glob("bin/*"), ROOT / "tests/conftest.py"]:
        text = path.read_text()
        names |= set(re.findall(r'env\.(?:str|bool|int|float|list|choice|url)\(\s*"([A-Z][A-Z0-9_]+)"', text))
        names |= set(re.findall(r'environ(?:\.get)?\(\s*"([A-Z][A-Z0-9_]+)"', text))
        names |= set(re.findall(r"\$\{([A-Z][A-Z0-9_]+):-", text))
        # names kept in constants: PROVIDERS_ENV = "...", ENV_ENHANCER = "..."
        names |= set(re.findall(r'\b\w*ENV\w* = "([A-Z][A-Z0-9_]+)"', text))
    names -= {"DJANGO_SETTINGS_MODULE", "DJANGO_ALLOW_ASYNC_UNSAFE", "TMPDIR"}  # not ours
    readme = (ROOT / "README.md").read_text()
    missing = sorted(n for n in names if f"`{n}`" not in readme)
    assert len(names) > 30
    assert missing == []


def test_readme_names_the_two_commands_and_ci_calls_the_test_one():
    readme = (ROOT / "README.md").read_text()
    assert "make run" in readme and "make test" in readme
    assert "make test" in (ROOT / ".ci/run").read_text()
