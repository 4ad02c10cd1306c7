"""Extracts ipvsadm command lines from notes (the /work/shared/seeds corpus) into
seed files for the ipvsadm_args and ipvsadm_restore fuzz targets.

Usage: python3 extract.py NOTES... ; writes ipvsadm_args/notes-NNN (one command line
each) and ipvsadm_restore/notes-FILE (each note's commands in order, as a restore
file). Shell variables are replaced by the values the notes assign them, as the
script would run."""
import re
import sys
from pathlib import Path

# A command line: `ipvsadm` and what follows up to the end of the option list
# (a new command, a comment, a shell keyword, a Chinese sentence).
COMMAND = re.compile(r"(?:^|[\s/`(])ipvsadm([ \t][^\n]*)")
STOP = re.compile(r"^(?:/|#|\||>|<|&|;|then|fi|else|echo|do|done|[^\x00-\x7f])")

out = Path(__file__).parent
(out / "ipvsadm_args").mkdir(exist_ok=True)
(out / "ipvsadm_restore").mkdir(exist_ok=True)
seen = set()
for note in sys.argv[1:]:
    text = Path(note).read_text(errors="replace")
    values = dict(re.findall(r"\b([A-Z][A-Z0-9_]*)=(\S+)", text))
    lines = []
    for start in [m.start() for m in re.finditer(r"ipvsadm[ \t]", text)]:
        match = COMMAND.match(text, max(start - 1, 0)) or COMMAND.match(text, start)
        if not match:
            continue
        words = []
        for word in match.group(1).split():
            if STOP.match(word):
                break
            # Trailing comments glued to the word (`-g#保存`), shell quoting.
            word = re.split(r"[#\"'”]", word)[0]
            if not word:
                break
            word = re.sub(r"\$\{?([A-Z][A-Z0-9_]*)\}?", lambda m: values.get(m.group(1), m.group(0)), word)
            words.append(word)
        if not words or not words[0].startswith("-"):
            continue
        line = " ".join(words)
        lines.append(line)
        if line not in seen:
            seen.add(line)
            (out / "ipvsadm_args" / f"notes-{len(seen):03}").write_text(line + "\n")
    if lines:
        (out / "ipvsadm_restore" / f"notes-{Path(note).stem}").write_text("\n".join(lines) + "\n")
