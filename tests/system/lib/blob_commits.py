#!/usr/bin/python3
"""Counts committed blobs in a peers.sh access log.

    blob_commits.py ACCESS_LOG NAMES PREFIX

NAMES holds blob names (container-relative, one a line: the SDK's listing).
Each must have been committed exactly once in ACCESS_LOG: one PUT answered
201 that creates the blob (Put Blob, no comp= query; or Put Block List,
comp=blocklist; not Put Block, comp=block), and no blob under PREFIX may be
committed without being listed. Retries of a commit whose answer was lost
show as 409 (BlobAlreadyExists, If-None-Match: *) and are counted apart.
Prints what is wrong (status 1) or a one-line summary (status 0).
"""
import json
import sys
import urllib.parse

log_path, names_path, prefix = sys.argv[1:4]
names = [line.strip() for line in open(names_path) if line.strip()]
commits = {}
conflicts = 0
for line in open(log_path):
    try:
        r = json.loads(line)
    except ValueError:
        continue
    u = urllib.parse.urlsplit(r.get("uri", ""))
    comp = [q for q in u.query.split("&") if q.startswith("comp=")]
    if r.get("method") != "PUT" or comp not in ([], ["comp=blocklist"]):
        continue
    # /ACCOUNT/CONTAINER/BLOB or /CONTAINER/BLOB: the name starts at PREFIX.
    path = urllib.parse.unquote(u.path)
    at = path.find("/" + prefix)
    if at < 0:
        continue
    name = path[at + 1:]
    if r.get("status") == 409:
        conflicts += 1
    elif r.get("status") == 201:
        commits[name] = commits.get(name, 0) + 1
bad = ["%s: %d commits" % (n, commits.get(n, 0)) for n in names if commits.get(n, 0) != 1]
bad += ["%s: committed, not listed" % n for n in sorted(commits) if n not in names]
if not names:
    bad.append("no blobs listed")
print("\n".join(bad) if bad else
      "%d blobs, one 201 commit (Put Blob or Put Block List) each; %d commits answered 409"
      % (len(names), conflicts))
sys.exit(1 if bad else 0)
