// The server's audit log as `amctl audit` reads it through AuditService: every checkpoint and
// every record, a page at a time.
import type { Client } from "@connectrpc/connect";
import type { AuditCheckpoint, AuditRecord } from "../gen/agentmachine/v1/audit_pb.js";
import type { AuditService } from "../gen/agentmachine/v1/audit_service_pb.js";

export type AuditClient = Client<typeof AuditService>;

/** The largest page AuditService serves. */
const PAGE_SIZE = 1000;

/** Every checkpoint, oldest first. */
export async function allCheckpoints(client: AuditClient): Promise<AuditCheckpoint[]> {
  const checkpoints: AuditCheckpoint[] = [];
  let pageToken = "";
  do {
    const page = await client.listCheckpoints({ pageSize: PAGE_SIZE, pageToken });
    checkpoints.push(...page.checkpoints);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return checkpoints;
}

/** Every record in sequence order, a page at a time, so that a log of any length streams through. */
export async function* allRecords(client: AuditClient): AsyncGenerator<AuditRecord> {
  let pageToken = "";
  do {
    const page = await client.listAuditRecords({ pageSize: PAGE_SIZE, pageToken });
    yield* page.records;
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
}

/**
 * The server's log. Its checkpoints are read before its records: records appended meanwhile
 * only make the log longer than its last checkpoint, whereas a checkpoint signed after the
 * records were read could cover records never read, which would look like a truncation.
 */
export async function serverLog(client: AuditClient): Promise<{ checkpoints: AuditCheckpoint[]; records: AsyncGenerator<AuditRecord> }> {
  const checkpoints = await allCheckpoints(client);
  return { checkpoints, records: allRecords(client) };
}
