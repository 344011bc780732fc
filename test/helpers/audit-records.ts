// The whole audit log as a caller with audit_read sees it, page after page.
import type { Client } from "@connectrpc/connect";
import type { AuditRecord } from "../../src/gen/agentmachine/v1/audit_pb.js";
import type { AuditService } from "../../src/gen/agentmachine/v1/audit_service_pb.js";

export async function allAuditRecords(audit: Client<typeof AuditService>): Promise<AuditRecord[]> {
  const records: AuditRecord[] = [];
  let pageToken = "";
  do {
    const page = await audit.listAuditRecords({ pageSize: 1000, pageToken });
    records.push(...page.records);
    pageToken = page.nextPageToken;
  } while (pageToken !== "");
  return records;
}
