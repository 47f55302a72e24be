#!/usr/bin/python3
"""Writes docs/api-reference.md from the XML documentation file of the plugin contract (SensMerging.Abstractions).

Usage (from anywhere; paths are relative to the repository root):
  dotnet build src/SensMerging.Abstractions -c Release --nologo
  /usr/bin/python3 scripts/api-reference.py            # rewrite docs/api-reference.md
  /usr/bin/python3 scripts/api-reference.py --check    # exit 1 when docs/api-reference.md is stale
  /usr/bin/python3 scripts/api-reference.py --stdout   # print the page instead of writing it
  --xml PATH picks another SensMerging.Abstractions.xml (for example the copy beside a test assembly).

Standard library only. The output depends only on the XML file: types sorted by name, members in the XML's order
(the source order), so the same build gives the same page.
"""

import argparse
import difflib
import os
import re
import sys
import xml.etree.ElementTree as ET

NAMESPACE = "SensMerging.Abstractions."
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_XML = os.path.join("src", "SensMerging.Abstractions", "bin", "Release", "net10.0", "SensMerging.Abstractions.xml")
PAGE = os.path.join("docs", "api-reference.md")
COMMAND = "dotnet build src/SensMerging.Abstractions -c Release && /usr/bin/python3 scripts/api-reference.py"
KINDS = {"M": "Method", "P": "Property", "F": "Field", "E": "Event"}


def short_type(name):
    """System.Collections.Generic.IEnumerable{System.Int32} -> IEnumerable<Int32>."""
    name = re.sub(r"[A-Za-z_][\w.]*", lambda m: m.group(0).rsplit(".", 1)[-1], name)
    return name.replace("{", "<").replace("}", ">").replace(",", ", ")


def split_id(member_id):
    """'M:Ns.Type.Name(args)' -> ('M', 'Type', 'Name', 'args' or None)."""
    prefix, rest = member_id.split(":", 1)
    args = None
    if "(" in rest:
        rest, args = rest[:-1].split("(", 1)
    if rest.startswith(NAMESPACE):
        rest = rest[len(NAMESPACE):]
    if prefix == "T":
        return prefix, rest, None, None
    owner, name = rest.rsplit(".", 1)
    return prefix, owner, name, args


def cref_text(cref):
    if ":" not in cref:
        return cref
    prefix, owner, name, _ = split_id(cref)
    if prefix == "T":
        return owner if not owner.startswith("System.") else owner.rsplit(".", 1)[-1]
    owner = owner.rsplit(".", 1)[-1]
    if name == "#ctor":
        return owner
    return f"{owner}.{name}"


def inline(elem):
    """The text of a doc element as Markdown; list items become lines that start with a marker."""
    parts = [elem.text or ""]
    for child in elem:
        tag = child.tag
        if tag in ("see", "seealso"):
            if child.get("cref"):
                parts.append(f"`{cref_text(child.get('cref'))}`")
            elif child.get("langword"):
                parts.append(f"`{child.get('langword')}`")
            else:
                parts.append(inline(child))
        elif tag in ("paramref", "typeparamref"):
            parts.append(f"`{child.get('name')}`")
        elif tag == "c":
            parts.append(f"`{' '.join(inline(child).split())}`")
        elif tag == "para":
            parts.append("\n\n" + inline(child) + "\n\n")
        elif tag == "list":
            numbered = child.get("type") == "number"
            for i, item in enumerate(child.findall("item"), 1):
                marker = f"{i}." if numbered else "-"
                parts.append(f"\n{marker} {inline(item)}")
            parts.append("\n\n")
        else:
            parts.append(inline(child))
        parts.append(child.tail or "")
    return "".join(parts)


def text(elem):
    """Normalized Markdown of an element: whitespace collapsed within lines, list lines and paragraphs kept."""
    if elem is None:
        return ""
    lines = []
    for raw in inline(elem).split("\n"):
        line = " ".join(raw.split())
        if line or (lines and lines[-1]):
            lines.append(line)
    return "\n".join(lines).strip()


def details(elem, out):
    """Summary, remarks, params, returns and exceptions of one member, appended to out."""
    summary = text(elem.find("summary"))
    out.append(summary if summary else "*(no summary)*")
    out.append("")
    remarks = text(elem.find("remarks"))
    if remarks:
        out.extend([remarks, ""])
    params = [(p.get("name"), text(p)) for p in elem.findall("param")]
    if params:
        out.append("Parameters:")
        out.append("")
        out.extend(f"- `{name}`: {desc}" for name, desc in params)
        out.append("")
    returns = text(elem.find("returns"))
    if returns:
        out.extend([f"Returns: {returns}", ""])
    for exc in elem.findall("exception"):
        out.extend([f"Throws `{cref_text(exc.get('cref', ''))}`: {text(exc)}", ""])


def member_title(prefix, owner, name, args):
    if prefix == "M":
        shown = owner.rsplit(".", 1)[-1] if name == "#ctor" else name
        kind = "Constructor" if name == "#ctor" else "Method"
        return f"{kind} `{shown}({short_type(args) if args else ''})`"
    if prefix == "P" and name == "Item" and args:
        return f"Indexer `this[{short_type(args)}]`"
    return f"{KINDS.get(prefix, prefix)} `{name}`"


def anchor(title):
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def render(xml_path):
    doc = ET.parse(xml_path).getroot()
    assembly = doc.findtext("assembly/name") or "SensMerging.Abstractions"
    types = {}
    order = []
    for member in doc.iter("member"):
        prefix, owner, name, args = split_id(member.get("name"))
        if owner not in types:
            types[owner] = {"self": None, "members": []}
            order.append(owner)
        if prefix == "T":
            types[owner]["self"] = member
        else:
            types[owner]["members"].append((prefix, name, args, member))
    out = [
        f"# {assembly} API reference",
        "",
        f"Generated from the XML documentation of `{assembly}` (the plugin contract) by `{COMMAND}`; "
        "do not edit this page by hand. See [plugins.md](plugins.md) for how to write a plugin.",
        "",
        "## Types",
        "",
    ]
    names = sorted(order, key=lambda n: (n.lower(), n))
    out.extend(f"- [{n}](#{anchor(n)})" for n in names)
    out.append("")
    for owner in names:
        entry = types[owner]
        out.extend([f"## {owner}", ""])
        if entry["self"] is not None:
            details(entry["self"], out)
        for prefix, name, args, member in entry["members"]:
            out.extend([f"### {member_title(prefix, owner, name, args)}", ""])
            details(member, out)
    while out and out[-1] == "":
        out.pop()
    return "\n".join(out) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--xml", default=os.path.join(ROOT, DEFAULT_XML), help="the SensMerging.Abstractions.xml to read")
    parser.add_argument("--out", default=os.path.join(ROOT, PAGE), help="the page to write or check")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--check", action="store_true", help="exit 1 when the page differs from what the XML gives")
    mode.add_argument("--stdout", action="store_true", help="print the page instead of writing it")
    args = parser.parse_args()
    if not os.path.isfile(args.xml):
        print(f"api-reference: {args.xml} not found; build first: dotnet build src/SensMerging.Abstractions -c Release",
              file=sys.stderr)
        return 2
    page = render(args.xml)
    if args.stdout:
        sys.stdout.buffer.write(page.encode("utf-8"))
        return 0
    if args.check:
        current = ""
        if os.path.isfile(args.out):
            with open(args.out, encoding="utf-8", newline="") as f:
                current = f.read()
        if current == page:
            return 0
        diff = difflib.unified_diff(current.splitlines(), page.splitlines(), args.out, "generated", lineterm="", n=1)
        sys.stderr.write("\n".join(list(diff)[:60]) + "\n")
        print(f"api-reference: {args.out} is stale; regenerate it with: {COMMAND}", file=sys.stderr)
        return 1
    with open(args.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(page)
    return 0


if __name__ == "__main__":
    sys.exit(main())
