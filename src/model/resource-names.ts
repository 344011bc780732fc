// The API's resource names (AIP-122): an operation is `operations/{id}`. Everything that turns
// an id into a name or a name back into its id (workspace directories, container and sandbox
// names, bundle files, idempotency keys, console links) goes through here.

const OPERATIONS = "operations/";

/** The name of the operation `id`: `operations/{id}`. */
export function operationName(id: string): string {
  return `${OPERATIONS}${id}`;
}

/** The id in an operation's name (`operations/{id}` → `{id}`); anything else is returned as it is. */
export function operationIdOf(name: string): string {
  return name.startsWith(OPERATIONS) ? name.slice(OPERATIONS.length) : name;
}
