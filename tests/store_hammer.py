"""A separate process working on one user's store, for tests/test_store_multiprocess.py.

    python tests/store_hammer.py ROOT NAME MODE COUNT SEED

Opens ``UserStore(ROOT)`` and, for MODE ``mixed``, works through COUNT messages of its own
(Message-ID ``<NAME.i@hammer>``) with append, COPY to Archive, MOVE to Trash, \\Deleted +
EXPUNGE and flag changes, in an order shuffled by SEED, claiming \\Recent in INBOX now and
then; it prints one JSON line per observation (what the store answered) and ``{"done": ...}``
at the end. MODE ``folders`` races folder create/delete/rename/append with the other process.
MODE ``loop`` appends and moves batches forever, printing each APPENDUID as soon as
the store returned it (the test SIGKILLs it mid-write).
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from relay.store.mailbox import UserStore  # noqa: E402


def message(name: str, i: int, pad: int = 0) -> bytes:
    return (f"From: {name}@hammer\r\nTo: u@example.org\r\nSubject: {name} {i}\r\n"
            f"Message-ID: <{name}.{i}@hammer>\r\n\r\nbody {i}\r\n" + "x" * pad + "\r\n").encode()


def emit(**kw) -> None:
    sys.stdout.write(json.dumps(kw) + "\n")
    sys.stdout.flush()


def mixed(store: UserStore, name: str, count: int, seed: int) -> None:
    rnd = random.Random(seed)
    kw = f"$by{name}"
    uid_of: dict[int, int] = {}
    # per message: append, copy, then (by i % 4) move / delete+expunge / flag / keep
    steps = [(i, 0) for i in range(count)]
    pending: list[tuple[int, int]] = []
    versions = []
    while steps or pending:
        if pending and (not steps or rnd.random() < 0.5):
            i, stage = pending.pop(rnd.randrange(len(pending)))
        else:
            i, stage = steps.pop(0)
        if stage == 0:
            validity, uid = store.append("INBOX", message(name, i), ["\\Draft"] if i % 5 == 0 else [])
            uid_of[i] = uid
            emit(op="append", folder="INBOX", i=i, uid=uid, validity=validity)
            pending.append((i, 1))
        elif stage == 1:
            validity, src, new = store.copy("INBOX", [uid_of[i]], "Archive")
            emit(op="copy", folder="Archive", i=i, uid=new[0], validity=validity, src=src)
            pending.append((i, 2))
        elif i % 4 == 0:
            validity, src, new = store.copy("INBOX", [uid_of[i]], "Trash", move=True)
            emit(op="move", folder="Trash", i=i, uid=new[0], validity=validity, src=src)
        elif i % 4 == 1:
            store.set_flags("INBOX", [uid_of[i]], "add", ["\\Deleted"])
            gone = store.expunge("INBOX", [uid_of[i]] if rnd.random() < 0.5 else None)
            emit(op="expunge", i=i, gone=gone)
        else:
            store.set_flags("INBOX", [uid_of[i]], "add", [kw, "\\Seen"])
            if i % 4 == 2:
                store.set_flags("INBOX", [uid_of[i]], "remove", ["\\Seen"])
        if rnd.random() < 0.2:
            emit(op="recent", uids=sorted(store.recent("INBOX")))
        if rnd.random() < 0.2:
            st = store.state("INBOX")
            versions.append(st.highestmodseq)
            emit(op="state", validity=st.uidvalidity, uids=st.uids, modseq=st.highestmodseq)
    emit(done=True, versions=versions)


def loop(store: UserStore, name: str, seed: int) -> None:
    rnd = random.Random(seed)
    i = 0
    while True:
        batch = []
        for _ in range(rnd.randint(5, 30)):
            _, uid = store.append("INBOX", message(name, i, pad=rnd.randint(0, 3000)))
            emit(op="append", i=i, uid=uid)
            batch.append(uid)
            i += 1
        store.set_flags("INBOX", batch, "add", ["\\Seen", "$hammer"])
        store.copy("INBOX", batch, "Archive")
        store.copy("INBOX", batch[: len(batch) // 2], "Trash", move=True)
        store.recent("INBOX")


def folders(store: UserStore, name: str, count: int, seed: int) -> None:
    """Folder operations racing the other process: shared names both create and delete, own
    names created, filled and renamed. Only StoreErrors a client could get are allowed."""
    from relay.store.types import StoreError
    rnd = random.Random(seed)
    allowed = {"ALREADYEXISTS", "NONEXISTENT", "TRYCREATE", "CANNOT"}
    kept = []
    for i in range(count):
        shared = f"Shared/{rnd.randrange(4)}"
        for op in rnd.sample(["create", "delete", "append", "own"], 4):
            try:
                if op == "create":
                    store.create(shared)
                elif op == "delete":
                    store.delete(shared)
                elif op == "append":
                    store.append(shared, message(name, i))
                else:
                    store.create(f"{name}/{i}")
                    store.append(f"{name}/{i}", message(name, i))
                    store.rename(f"{name}/{i}", f"{name}/r{i}")
                    kept.append(f"{name}/r{i}")
            except StoreError as e:
                if e.code not in allowed:
                    raise
        store.subscribe(shared, rnd.random() < 0.5)
    emit(done=True, kept=kept)


def main() -> None:
    root, name, mode, count, seed = sys.argv[1:6]
    store = UserStore(Path(root), "u@example.org")
    emit(ready=True)
    try:
        if mode == "mixed":
            mixed(store, name, int(count), int(seed))
        elif mode == "folders":
            folders(store, name, int(count), int(seed))
        else:
            loop(store, name, int(seed))
    finally:
        store.close()


if __name__ == "__main__":
    main()
