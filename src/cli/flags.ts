// Option parsers shared by the commands. Each throws InvalidArgumentError, which commander
// reports as a usage error naming the option.
import { InvalidArgumentError } from "commander";
import { budgetDimensions, type BudgetDimensionName } from "../model/budget-dimensions.js";

/** A non-negative (or, with `min` 1, positive) safe integer. */
export function integerFlag(min = 0) {
  return (text: string): number => {
    const value = Number(text);
    if (!/^\d+$/.test(text) || !Number.isSafeInteger(value) || value < min) {
      throw new InvalidArgumentError(`must be an integer of at least ${min}`);
    }
    return value;
  };
}

/** A repeatable option: every occurrence, in order. */
export function collect<T>(parse: (text: string) => T) {
  return (text: string, previous: T[] = []): T[] => [...previous, parse(text)];
}

/** A repeatable `key=value` option, gathered into one record. */
export function labelFlag(text: string, previous: Record<string, string> = {}): Record<string, string> {
  const at = text.indexOf("=");
  if (at <= 0) throw new InvalidArgumentError("must be KEY=VALUE");
  return { ...previous, [text.slice(0, at)]: text.slice(at + 1) };
}

/** The enum value whose contract spelling is `text`, from one of the tables of src/model/mapping.ts. */
export function contractName<E extends number>(table: ReadonlyMap<E, string>) {
  return (text: string): E => {
    for (const [value, name] of table) if (name === text) return value;
    throw new InvalidArgumentError(`must be one of ${[...table.values()].join(", ")}`);
  };
}

/** A resource name: `operations/ID`, or just `ID`, completed with the collection. */
export function resourceName(collection: string) {
  return (text: string): string => (text.startsWith(`${collection}/`) ? text : `${collection}/${text}`);
}

/** An event sequence number (uint64). */
export function sequenceFlag(text: string): bigint {
  if (!/^\d{1,20}$/.test(text)) throw new InvalidArgumentError("must be an event sequence number");
  return BigInt(text);
}

/** A byte offset in a stream (uint64). */
export function offsetFlag(text: string): bigint {
  if (!/^\d{1,20}$/.test(text) || BigInt(text) >= 2n ** 64n) throw new InvalidArgumentError("must be a byte offset (a non-negative integer)");
  return BigInt(text);
}

/** A repeatable `dimension=N` option (`tokens=1000`), by the budget's contract names, gathered into one record. */
export function budgetFlag(text: string, previous: Partial<Record<BudgetDimensionName, bigint>> = {}) {
  const [key, value] = text.split("=");
  if (!budgetDimensions.includes(key as BudgetDimensionName) || !/^\d+$/.test(value ?? "")) {
    throw new InvalidArgumentError(`must be DIMENSION=N with DIMENSION one of ${budgetDimensions.join(", ")}`);
  }
  return { ...previous, [key as BudgetDimensionName]: BigInt(value!) };
}
