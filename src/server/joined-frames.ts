// The frames of one delivery's events joined into one buffer, shared by the streams that take the
// same events. The event hub hands each direct stream the events of a delivery that match its
// filter (src/lifecycle/event-hub.ts); a delivery carries the commits made since the last one,
// tens of events, and writing them as one buffer costs a stream one write instead of one per event. Streams with the same filter
// come one after another in the hub's loop, so remembering the last join serves all of them.

let lastFrames: readonly Uint8Array[] = [];
let lastJoined: Uint8Array | undefined;

/** Whether `a` and `b` hold the same frames (the same objects: frames are shared, never copied), in order. */
function sameFrames(a: readonly Uint8Array[], b: readonly Uint8Array[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** `frames` as one buffer: the frame itself when there is one, else their concatenation (the last one reused). */
export function joinedFrames(frames: readonly Uint8Array[]): Uint8Array {
  if (frames.length === 1) return frames[0]!;
  if (lastJoined === undefined || !sameFrames(frames, lastFrames)) {
    lastJoined = Buffer.concat(frames);
    lastFrames = [...frames];
  }
  return lastJoined;
}
