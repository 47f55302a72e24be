#!/usr/bin/python3
"""Copies source files into docs/plugins.md where it says <!-- include: PATH --> ... <!-- /include -->.

PATH is relative to docs/. The block between the two markers becomes the file's text in a ```csharp fence, so the
guide's worked example is the template file itself. PluginTemplateFilesTests fails when the guide and a file differ.
"""
import pathlib
import re
import sys

DOCS = pathlib.Path(__file__).resolve().parent.parent / "docs"
GUIDE = DOCS / "plugins.md"
PATTERN = re.compile(r"(<!-- include: (?P<path>[^ ]+) -->\n)(?P<body>.*?)(<!-- /include -->)", re.S)


def render(text: str) -> str:
    def block(match: re.Match) -> str:
        source = (DOCS / match.group("path")).read_text(encoding="utf-8")
        if not source.endswith("\n"):
            source += "\n"
        return match.group(1) + "```csharp\n" + source + "```\n" + match.group(4)

    return PATTERN.sub(block, text)


def main() -> int:
    text = GUIDE.read_text(encoding="utf-8")
    updated = render(text)
    if updated != text:
        GUIDE.write_text(updated, encoding="utf-8")
        print(f"updated {GUIDE}")
    else:
        print(f"{GUIDE} is up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
