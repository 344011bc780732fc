/** Everything checked is fine. */
export const EXIT_OK = 0;
/** Something checked is not fine (an invalid contract, a failed operation). */
export const EXIT_INVALID = 1;
/** The command could not do its job: bad usage, an unreadable file, an unreachable server. */
export const EXIT_USAGE = 2;
