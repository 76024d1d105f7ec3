"""The local library: model files in MODELS_DIR and their rows in the catalogue, kept in agreement.

`model_manager.core.services.local_storage` exports the service, `LocalStorage`; its parts live here:
`files` (blocking file helpers and names), `staging` (staging files), `state` (what every flow shares),
`commit` (the step that adds files as a model), `importer` (server files and downloads), `uploads`,
`reconcile` (recovery at start), `ownership` (which row owns a file, by identity), `survey` (ours, junk,
unregistered models, the user's), `adoption` (registering found models in place), `cleanup` (stats and
cleanup), `records` (rows as the API shows them) and `service` (`LocalStorage` itself: listing, deleting,
files in use).

Crash safety. A model enters the library in this order, and a crash between any two steps leaves
either no model or a complete one once `reconcile()` has run at the next start:

1. its bytes go to a hidden staging file in MODELS_DIR (`.importing-<uuid>.part`), hashed while written,
   then fsynced (a same-filesystem `move` and a same-filesystem download skip this: nothing is copied);
2. a `pending` row naming the final path(s) is committed (SQLite, synchronous=FULL);
3. each file is renamed into place, never over an existing file, and the directory fsynced;
4. the row becomes `ready`; only then is a cross-filesystem `move` source removed.

`reconcile()` removes staging files (1), drops pending rows whose files are not all there with the
recorded size but keeps their files, which may be a person's own (2), and marks pending rows whose
files are complete ready (3). A model leaves in the opposite order: its row is deleted first, in the
same transaction that notes its files (path, identity, size) in `files_to_remove`, then its files; after
a crash in between, `reconcile()` removes each noted file that is still the same file, and keeps one
put at that path since.
Ready rows whose files are missing are never dropped at start (their drive may be unmounted); `cleanup`
drops them, except when their folder is missing or empty.

Concurrency. Dedupe check, naming, insert, renames and the ready mark run as one step in a worker thread
under an asyncio lock (deletes and cleanup take the same lock), so a pending row never outlives that step
in a running process; the unique hash index is the final guard against duplicates.

Every blocking call (hashing, copying, stat, header reading, fsync, SQLite) runs in a worker thread, and
files are read in chunks, never whole.
"""
