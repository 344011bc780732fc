// Settings shared by every connection of the PostgreSQL store: the pool's and the event feed's.
import { types, type CustomTypesConfig, type PoolConfig } from "pg";

/** BIGINT columns come back as bigint, not as strings. */
const int8AsBigInt: CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === types.builtins.INT8 && format !== "binary"
      ? (value: string) => BigInt(value)
      : types.getTypeParser(oid, format)) as CustomTypesConfig["getTypeParser"],
};

/** A `postgres://` URL or pool settings, as settings with the store's type parsers. */
export function clientConfig(connection: string | PoolConfig): PoolConfig {
  return { ...(typeof connection === "string" ? { connectionString: connection } : connection), types: int8AsBigInt };
}
