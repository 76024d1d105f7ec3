"""Which bytes each connection of a parallel download fetches next, and how many connections to run.

Parts are handed out in file order, so the hash (see `digest.py`) keeps close behind the bytes; when
none is left, an idle connection takes half of the biggest part still in flight, so the last bytes do
not wait for one slow link (as `aria2c` does).

Connections are added while they pay off, as a congestion window grows: one at first, then twice as many
each time the last doubling raised the total speed by a tenth or more, up to the maximum. A CDN that
caps each connection gets all of them within a second; a link (or a CPU) that one connection
already fills keeps one, which is then faster than many: they would only add work. That one connection
then asks for the rest of the file in one request instead of part by part.
"""

from __future__ import annotations

from model_manager.core.services.downloads.partial import Part

MIB = 1024 * 1024
# How long a number of connections runs before its speed is judged. Short, because every probe at too
# few connections is time lost on a capped CDN: 0.5 s left ours 1.4-1.6x behind `aria2c -x8` there.
PROBE_SECONDS = 0.25
# Parts are planned no smaller than this (a split in flight may be): each part is one request, and one
# connection fetching a 253 MB file in 3.8 MB parts (a 64th of it) took 0.66 s against 0.50 s in 16 MiB
# parts, and curl's 0.51 s, on loopback.
PLANNED_PART_MIN_BYTES = 16 * MIB
# More connections stay when they raise the speed by this factor: any clear gain (a 25% bar stopped the
# growth at 4 connections when 8 gave 1.2x, CPU-bound at 50 MB/s per connection).
WORTH_IT = 1.1


def plan_parts(size: int | None, connections: int, parallel_threshold: int, min_part_bytes: int) -> list[Part]:
    """The parts a fresh download of `size` bytes is cut into: one, or many for parallel connections."""
    if size is None or connections <= 1 or size < max(parallel_threshold, 2 * min_part_bytes):
        return [Part(0, size)]
    # About 8 parts per connection, handed out in order, keeps the hash close behind the bytes.
    part_size = max(min_part_bytes, PLANNED_PART_MIN_BYTES, min(size // (connections * 8), 256 * MIB))
    part_size = min(part_size, -(-size // connections))
    return [Part(offset, min(part_size, size - offset)) for offset in range(0, size, part_size)]


class PartScheduler:
    """Hands out parts to connections and decides how many connections should run."""

    def __init__(self, parts: list[Part], max_connections: int, min_part_bytes: int, initial: int = 1) -> None:
        self.parts = parts
        self.max_connections = max_connections
        self.min_part_bytes = min_part_bytes
        self.wanted = max(1, min(initial, max_connections))  # connections that should be running
        self.running = 0  # connections working (maintained by the caller)
        self._growing = max_connections > 1
        self._since: tuple[float, int] | None = None  # (time, bytes received) when `wanted` last changed
        self._previous_speed = 0.0

    def next_part(self) -> Part | None:
        """The part a connection should fetch next, or None when it should stop (no work, or too many)."""
        if self.running > self.wanted:
            return None
        for part in self.parts:
            if not part.busy and not part.done:
                if self.wanted == 1 and not self._growing:
                    self._absorb_untouched_followers(part)  # one connection: one request for the rest
                return part
        return self._split_biggest()

    @property
    def has_unassigned_work(self) -> bool:
        return any(not part.busy and not part.done for part in self.parts) or self._splittable() is not None

    def observe(self, now: float, received: int) -> int:
        """Judge the speed since the last change of `wanted`; return the new `wanted`."""
        if self._since is None:
            self._since = (now, received)
            return self.wanted
        started, received_then = self._since
        if not self._growing or now - started < PROBE_SECONDS:
            return self.wanted
        speed = (received - received_then) / (now - started)
        if self.wanted == 1 or speed >= WORTH_IT * self._previous_speed:
            if self.wanted >= self.max_connections:
                self._growing = False
            else:
                self._previous_speed = speed
                self.wanted = min(self.max_connections, self.wanted * 2)
        else:
            self.wanted = max(1, self.wanted // 2)  # the last doubling did not pay: go back and stay
            self._growing = False
        self._since = (now, received)
        return self.wanted

    def _absorb_untouched_followers(self, part: Part) -> None:
        index = self.parts.index(part) + 1
        while index < len(self.parts):
            follower = self.parts[index]
            if follower.busy or follower.completed or follower.offset != part.end:
                return
            part.size += follower.size
            del self.parts[index]

    def _splittable(self) -> Part | None:
        candidates = [p for p in self.parts if p.busy and p.remaining is not None]
        if not candidates:
            return None
        biggest = max(candidates, key=lambda p: p.remaining)
        return biggest if biggest.remaining >= 2 * self.min_part_bytes else None

    def _split_biggest(self) -> Part | None:
        biggest = self._splittable()
        if biggest is None:
            return None
        split_at = biggest.offset + biggest.received + biggest.remaining // 2
        new = Part(split_at, biggest.end - split_at)
        biggest.size = split_at - biggest.offset  # its connection stops at the new end
        self.parts.insert(self.parts.index(biggest) + 1, new)
        return new
