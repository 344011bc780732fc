#!/usr/bin/python3
"""A Python client of the operation plane, from stubs that protoc generated out of proto/.

    usage: AMCTL_TOKEN=... /usr/bin/python3 examples/clients/python/client.py [BASE_URL]
           (default http://127.0.0.1:7070; run generate.sh first)

AMCTL_TOKEN must hold a credential that may create profiles and run executions (see
`amctl delegation root`, or the README): it goes with every call as `authorization: Bearer`.
The stubs are read from AMCTL_PYTHON_STUBS, by default the gen/ directory beside this file.

It creates a profile, runs an execution that reports progress, and follows the execution's
events with WatchEvents: it drops the stream on purpose after a few events and resumes after the
last sequence it saw, so that every event arrives exactly once. Then it cancels the finished
execution, which the server refuses, and prints the reason from the google.rpc.ErrorInfo in the
refusal's `grpc-status-details-bin` trailer. Every line it prints starts with what it reports:
`profile`, `execution`, `event`, `disconnected`, `resumed`, `terminal`, `refused`, `reason`,
`detail`. test/e2e/python-client.test.ts runs it against a real server.

Only field names and numbers of the API's messages are used (no oneof names), so it keeps
working when a oneof is renamed.
"""

import os
import sys
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.environ.get("AMCTL_PYTHON_STUBS") or os.path.join(HERE, "gen"))

import grpc  # noqa: E402  (python3-grpcio)

try:
    from agentmachine.v1 import operation_pb2, operation_service_pb2, operation_service_pb2_grpc, types_pb2  # noqa: E402
    from google.rpc import error_details_pb2, status_pb2  # noqa: E402
except ImportError as error:
    sys.exit(f"cannot import the generated stubs ({error}): run examples/clients/python/generate.sh first")

TERMINAL = {types_pb2.TASK_STATE_COMPLETED, types_pb2.TASK_STATE_FAILED, types_pb2.TASK_STATE_CANCELLED}
# The execution: three progress reports, as JSON lines on file descriptor 3, a moment apart, so
# that some of its events happen while the client is disconnected and some after it resumed.
PROGRESS_SCRIPT = 'for p in 25 50 75; do echo "{\\"percent\\": $p, \\"message\\": \\"step $p\\"}" >&3; sleep 0.3; done'
# Events read before the client drops the stream on purpose.
EVENTS_BEFORE_DISCONNECT = 2


def target_of(base_url):
    """The gRPC target (host:port) of a base URL such as http://127.0.0.1:7070."""
    return base_url.split("://", 1)[-1].rstrip("/")


def describe(event):
    """One line for an event: its sequence, type and state, and the progress it reports."""
    line = f"event {event.sequence} {types_pb2.EventType.Name(event.type)} {types_pb2.TaskState.Name(event.state)}"
    if event.HasField("progress"):
        line += f" {event.progress.percent}% {event.progress.message}"
    return line


def submit(stub, metadata, **request):
    """Submits an operation under a fresh idempotency key (a retry would reuse the key)."""
    response = stub.SubmitOperation(
        operation_service_pb2.SubmitOperationRequest(request_id=str(uuid.uuid4()), **request), metadata=metadata
    )
    return response.operation


def wait_until_done(stub, metadata, name):
    """Follows one operation with WatchOperation, which ends after its terminal event."""
    state = None
    for response in stub.WatchOperation(operation_service_pb2.WatchOperationRequest(name=name), metadata=metadata):
        state = response.event.state
    return state


def watch(stub, metadata, name, after_sequence, stop_after=None):
    """
    Yields the events of operation `name` after `after_sequence` with WatchEvents, then returns
    the sequence to resume after and whether the operation ended. It closes the stream after the
    terminal event, or after `stop_after` events: a client that goes away mid-stream.
    """
    request = operation_service_pb2.WatchEventsRequest(
        filter=operation_service_pb2.EventFilter(operations=[name]), after_sequence=after_sequence
    )
    call = stub.WatchEvents(request, metadata=metadata)
    seen = 0
    try:
        for response in call:
            if response.HasField("bookmark"):
                # Every event up to the bookmark has been considered: resuming after it is safe.
                after_sequence = max(after_sequence, response.bookmark.sequence)
                continue
            event = response.event
            after_sequence = event.sequence
            seen += 1
            yield event
            if event.state in TERMINAL:
                return after_sequence, True
            if seen == stop_after:
                return after_sequence, False
    finally:
        call.cancel()  # closes the HTTP/2 stream: the server stops sending
    raise RuntimeError(f"the event stream of {name} ended before the operation did")


def follow_with_resume(stub, metadata, name):
    """Yields an operation's events to its end, dropping the stream once on the way and resuming."""
    last_seen, ended = yield from watch(stub, metadata, name, 0, stop_after=EVENTS_BEFORE_DISCONNECT)
    if not ended:
        print(f"disconnected after sequence {last_seen}", flush=True)
        print(f"resumed after sequence {last_seen}", flush=True)
        yield from watch(stub, metadata, name, last_seen)


def refusal_details(error):
    """The google.rpc.Status a refused call carries in its grpc-status-details-bin trailer."""
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            return status_pb2.Status.FromString(value)
    return None


def print_refusal(error):
    """Prints a refused call's code, message and details: the reason of a google.rpc.ErrorInfo."""
    print(f"refused {error.code().name}: {error.details()}", flush=True)
    status = refusal_details(error)
    for detail in status.details if status else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            metadata = " ".join(f"{key}={value}" for key, value in sorted(info.metadata.items()))
            print(f"reason {info.reason} domain {info.domain} {metadata}".rstrip(), flush=True)
        else:
            print(f"detail {detail.type_url}", flush=True)


def main(argv):
    base_url = argv[1] if len(argv) > 1 else "http://127.0.0.1:7070"
    token = os.environ.get("AMCTL_TOKEN", "").strip()
    if not token:
        sys.exit("AMCTL_TOKEN must hold a credential (see amctl delegation root)")
    metadata = (("authorization", f"Bearer {token}"),)

    with grpc.insecure_channel(target_of(base_url)) as channel:
        stub = operation_service_pb2_grpc.OperationServiceStub(channel)

        profile_id = f"python-{uuid.uuid4().hex[:12]}"
        created = submit(
            stub,
            metadata,
            spec=operation_pb2.OperationSpec(
                profile_create=operation_pb2.ProfileCreateSpec(profile_id=profile_id, profile_type=types_pb2.PROFILE_TYPE_PERSONAL)
            ),
        )
        state = wait_until_done(stub, metadata, created.name)
        print(f"profile profiles/{profile_id} {types_pb2.TaskState.Name(state)} by {created.name}", flush=True)

        execution = submit(
            stub,
            metadata,
            profile=f"profiles/{profile_id}",
            spec=operation_pb2.OperationSpec(execution_start=operation_pb2.ExecutionStartSpec(argv=["sh", "-c", PROGRESS_SCRIPT])),
            labels={"example": "python-client"},
        )
        print(f"execution {execution.name}", flush=True)

        last = None
        for last in follow_with_resume(stub, metadata, execution.name):
            print(describe(last), flush=True)
        print(f"terminal {types_pb2.TaskState.Name(last.state)}", flush=True)

        # Cancelling what has already ended is refused (FailedPrecondition), with a reason.
        try:
            stub.CancelOperation(operation_service_pb2.CancelOperationRequest(name=execution.name), metadata=metadata)
            sys.exit("the server cancelled an execution that had already ended")
        except grpc.RpcError as error:
            print_refusal(error)
    return 0 if last.state == types_pb2.TASK_STATE_COMPLETED else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
