"""The README's "Use the pieces without Lightning" snippets run as written."""

import re

from conftest import ROOT


def test_readme_snippets_run(in_tmp):
    text = (ROOT / "README.md").read_text()
    section = text.split("## Use the pieces without Lightning", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "the section must hold python snippets"
    scope: dict = {}
    for code in blocks:
        exec(compile(code, "README.md", "exec"), scope)  # noqa: S102  (our own documentation)
    assert scope["gaussians"].num_gaussians == 3 * 5 * 8 * 8
    assert scope["out"].total.grad_fn is not None
    assert set(scope["out"].terms) == {"mse", "depth"}
    assert any(p.grad is not None for p in scope["decoder"].parameters())
    assert (in_tmp / "scene.ply").stat().st_size > 0
