"""Builds the raw lists of the Openclipart set from Debian's openclipart-svg package.

Usage: make_raw.py SVG_ROOT VOCAB OUT_DIR [--sample N] [--categories a,b,...]

SVG_ROOT is /usr/share/openclipart/svg. VOCAB is the WordPiece vocabulary of
all-MiniLM-L6-v2 (vocab.txt in the fetched encoder folder); it decides what
counts as English. The script writes two files in OUT_DIR/raw/:
- images.jsonl: `id`, `file` (relative to SVG_ROOT), `category` (top folder),
  `subcategory` (second folder, or `-`);
- captions.jsonl: `id`, `image_id`, `kind` (title, keywords or description), `text`.

Captions come from each drawing's RDF metadata:
- the title (dc:title);
- the keywords (dc:subject), joined with commas; a keyword that repeats the
  author's name (dc:creator), or one of the upload tools' tags (`hash`, `clipart`...),
  is dropped;
- the description (dc:description), when it has at most 200 characters.

A text is English when every word of two letters or more is a whole word of
the vocabulary: an uncased English WordPiece list of about 30k entries, so
Italian or French titles fall apart into pieces and are left out. A drawing
is kept when at least one caption is English, and every kept caption is
English. File names, not metadata, give the category.

--sample N keeps the first N // len(categories) kept drawings of each category
(in path order), for the CI's small end-to-end build.
"""
import argparse
import json
import os
import re
import xml.etree.ElementTree as ET

NS = {
    "dc": "http://purl.org/dc/elements/1.1/",
    "cc": "http://web.resource.org/cc/",
    "rdf": "http://www.w3.org/1999/02/22-rdf-syntax-ns#",
}
WORD = re.compile(r"[A-Za-z]+")
# Tags the library's upload tools added to many drawings; they describe nothing.
JUNK_KEYWORDS = {"hash", "clip art", "clipart", "media", "svg", "png", "public domain"}


def english(text, vocab):
    words = [w.lower() for w in WORD.findall(text)]
    long_words = [w for w in words if len(w) >= 2]
    if not long_words or not text.isascii():
        return False
    return all(w in vocab for w in long_words)


def clean(text):
    return " ".join((text or "").split())


def metadata(path):
    """(title, keywords, description, creator) from the drawing's RDF block."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError:
        return None
    work = root.find(".//cc:Work", NS)
    if work is None:
        return None
    title = clean(work.findtext("dc:title", default="", namespaces=NS))
    description = clean(work.findtext("dc:description", default="", namespaces=NS))
    creator = clean(work.findtext("dc:creator/cc:Agent/dc:title", default="", namespaces=NS))
    keywords = [clean(li.text) for li in work.findall("dc:subject/rdf:Bag/rdf:li", NS) if clean(li.text)]
    return title, keywords, description, creator


def captions_of(path, vocab):
    meta = metadata(path)
    if meta is None:
        return []
    title, keywords, description, creator = meta
    out = []
    if english(title, vocab):
        out.append(("title", title))
    kept = [
        k for k in keywords
        if k.lower() != creator.lower() and k.lower() not in JUNK_KEYWORDS and english(k, vocab)
    ]
    if kept:
        out.append(("keywords", ", ".join(dict.fromkeys(kept))))
    if description and len(description) <= 200 and english(description, vocab):
        if description.lower() != title.lower():
            out.append(("description", description))
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("svg_root")
    parser.add_argument("vocab")
    parser.add_argument("out_dir")
    parser.add_argument("--sample", type=int, default=0)
    parser.add_argument("--categories", default="")
    args = parser.parse_args()
    vocab = {line.strip() for line in open(args.vocab, encoding="utf-8") if line.strip().isalpha()}
    categories = sorted(d for d in os.listdir(args.svg_root) if os.path.isdir(os.path.join(args.svg_root, d)))
    if args.categories:
        wanted = args.categories.split(",")
        missing = [c for c in wanted if c not in categories]
        if missing:
            raise SystemExit(f"{args.svg_root}: no category folder {', '.join(missing)}")
        categories = wanted
    per_category = args.sample // len(categories) if args.sample else None
    images, captions = [], []
    counts = {}
    for category in categories:
        files = []
        for folder, _, names in os.walk(os.path.join(args.svg_root, category)):
            files += [os.path.join(folder, n) for n in names if n.endswith(".svg")]
        kept = 0
        for path in sorted(files):
            if per_category is not None and kept >= per_category:
                break
            found = captions_of(path, vocab)
            if not found:
                continue
            rel = os.path.relpath(path, args.svg_root)
            parts = rel.split(os.sep)
            image_id = rel[: -len(".svg")]
            images.append({
                "id": image_id,
                "file": rel,
                "category": parts[0],
                "subcategory": parts[1] if len(parts) > 2 else "-",
            })
            for kind, text in found:
                captions.append({"id": f"{image_id}#{kind}", "image_id": image_id, "kind": kind, "text": text})
            kept += 1
        counts[category] = (kept, len(files))
    raw = os.path.join(args.out_dir, "raw")
    os.makedirs(raw, exist_ok=True)
    for name, rows in (("images.jsonl", images), ("captions.jsonl", captions)):
        tmp = os.path.join(raw, name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        os.replace(tmp, os.path.join(raw, name))
    for category, (kept, total) in counts.items():
        what = "sampled from" if per_category is not None else "with English metadata, of"
        print(f"{category}: {kept} drawings {what} {total}")
    print(f"{len(images)} drawings, {len(captions)} captions -> {raw}")


if __name__ == "__main__":
    main()
