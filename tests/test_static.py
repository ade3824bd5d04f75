"""The committed CSS must be rebuilt when templates use new classes (run `make css`)."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _css_escape(name: str) -> str:
    return re.sub(r"([:/.\[\]%()!#,>+~=*'\"])", r"\\\1", name)


def test_every_template_class_exists_in_the_compiled_css():
    css = (ROOT / "static/css/app.css").read_text()
    missing = set()
    for template in ROOT.glob("**/templates/**/*.html"):
        if ".venv" in template.parts or "node_modules" in template.parts:
            continue
        for attr in re.findall(r'class="([^"]*)"', template.read_text()):
            attr = re.sub(r"{%.*?%}|{{.*?}}", " ", attr)
            for name in attr.split():
                if not re.search(r"\." + re.escape(_css_escape(name)) + r"(?![\w-])", css):
                    missing.add(f"{template.relative_to(ROOT)}: {name}")
    assert sorted(missing) == [], "rebuild the CSS with `make css`"
