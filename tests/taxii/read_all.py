"""Reads everything a TAXII 2.1 server offers with the OASIS client.

Usage: read_all.py BASE_URL USER PASSWORD PAGE_SIZE OUT_DIR

Walks discovery, every API root and every readable collection; reads all
objects and the whole manifest page by page; writes one STIX bundle per
collection (OUT_DIR/<alias or id>.json) and prints a JSON summary on
standard output.
"""

import json
import sys
import uuid

from taxii2client.v21 import Server, as_pages


def main():
    base, user, password, page_size, out_dir = sys.argv[1:6]
    page_size = int(page_size)
    server = Server(base + "/taxii2/", user=user, password=password)
    summary = {"title": server.title, "api_roots": []}
    for root in server.api_roots:
        entry = {"title": root.title, "versions": root.versions, "collections": []}
        for collection in root.collections:
            if not collection.can_read:
                continue
            objects, pages = [], 0
            for envelope in as_pages(collection.get_objects, per_request=page_size):
                pages += 1
                objects.extend(envelope.get("objects", []))
            manifest = []
            for envelope in as_pages(collection.get_manifest, per_request=page_size):
                manifest.extend(envelope.get("objects", []))
            name = collection.alias or collection.id
            bundle = {
                "type": "bundle",
                "id": "bundle--" + str(uuid.uuid4()),
                "objects": objects,
            }
            path = f"{out_dir}/{name}.json"
            with open(path, "w", encoding="utf-8") as out:
                json.dump(bundle, out)
            entry["collections"].append({
                "id": collection.id,
                "alias": collection.alias,
                "pages": pages,
                "objects": [[o["id"], o.get("modified", "")] for o in objects],
                "manifest": len(manifest),
                "file": path,
            })
        summary["api_roots"].append(entry)
    json.dump(summary, sys.stdout)


if __name__ == "__main__":
    main()
