// Diagnostics: export a redacted bundle of one profile (an agent_machine.diagnostics.export_redacted
// operation, which changes nothing it describes, so it needs no --console-actions), then
// download it, or download an earlier export.
import { create } from "@bufbuild/protobuf";
import { OperationFilterSchema } from "../../gen/agentmachine/v1/operation_service_pb.js";
import type { Operation } from "../../gen/agentmachine/v1/operation_pb.js";
import { OperationType, TaskState } from "../../gen/agentmachine/v1/types_pb.js";
import { isTerminal } from "../../model/transitions.js";
import { operationIdOf } from "../../model/resource-names.js";
import { diagnostics, operations } from "../client.js";
import { field, h, liveStatus } from "../dom.js";
import { stateName, time } from "../format.js";
import type { ViewContext } from "./view.js";

async function download(operation: Operation, status: HTMLElement, signal: AbortSignal): Promise<void> {
  status.textContent = `downloading ${operation.name}…`;
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  for await (const { chunk } of diagnostics.downloadDiagnostics({ operation: operation.name }, { signal })) chunks.push(new Uint8Array(chunk));
  const link = h(
    "a",
    { href: URL.createObjectURL(new Blob(chunks, { type: "application/gzip" })), download: `diagnostics-${operationIdOf(operation.name)}.tar.gz` },
    "save",
  );
  document.body.append(link);
  link.click();
  link.remove();
  status.textContent = `downloaded ${operation.name}`;
}

export async function renderDiagnostics({ root, signal }: ViewContext): Promise<void> {
  const status = liveStatus();
  const profile = h("input", { type: "text", name: "profile", placeholder: "profiles/…", required: true });
  const form = h("form", { "aria-label": "Export diagnostics" }, field("Profile", profile), h("button", { type: "submit" }, "Export diagnostics"));
  const list = h("ul", { "aria-label": "Diagnostics exports" });
  root.append(
    h("h1", {}, "Diagnostics"),
    h("p", {}, "A redacted bundle of one profile's recent operations and the server's state, for a bug report."),
    form,
    status,
    h("h2", {}, "Exports"),
    list,
  );

  const item = (operation: Operation): HTMLElement =>
    h(
      "li",
      {},
      `${operation.name} ${operation.profile} ${time(operation.createTime)} ${stateName(operation.state)} `,
      operation.state === TaskState.COMPLETED
        ? h(
            "button",
            {
              type: "button",
              "aria-label": `Download ${operation.name}`,
              onclick: () => void download(operation, status, signal).catch((error: unknown) => (status.textContent = (error as Error).message)),
            },
            "Download",
          )
        : undefined,
    );
  const load = async (): Promise<void> => {
    const { operations: exports } = await operations.listOperations(
      { pageSize: 20, filter: create(OperationFilterSchema, { types: [OperationType.DIAGNOSTICS_EXPORT_REDACTED] }) },
      { signal },
    );
    list.replaceChildren(...exports.map(item));
  };

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    status.textContent = "exporting…";
    void (async () => {
      const name = profile.value.trim();
      const { operation } = await operations.submitOperation(
        {
          requestId: `console-${crypto.randomUUID()}`,
          profile: name.startsWith("profiles/") ? name : `profiles/${name}`,
          spec: { kind: { case: "diagnosticsExport", value: {} } },
        },
        { signal },
      );
      let ended = operation!;
      for await (const { event } of operations.watchOperation({ name: ended.name }, { signal })) {
        if (event !== undefined && isTerminal(event.state)) break;
      }
      ended = (await operations.getOperation({ name: ended.name }, { signal })).operation!;
      await load();
      if (ended.state !== TaskState.COMPLETED) {
        status.textContent = `${ended.name} ${stateName(ended.state)}: ${ended.stopCause?.message ?? ""}`;
        return;
      }
      await download(ended, status, signal);
    })().catch((error: unknown) => (status.textContent = (error as Error).message));
  });
  await load();
}
