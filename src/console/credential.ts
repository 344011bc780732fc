// The credential the operator pasted in. Session storage only: it lasts as long as the tab,
// is never put in a URL (which ends up in history and logs) and is never written out.
const KEY = "amctl.credential";

export function currentCredential(): string | undefined {
  return sessionStorage.getItem(KEY) ?? undefined;
}

export function rememberCredential(token: string): void {
  sessionStorage.setItem(KEY, token.trim());
}

export function forgetCredential(): void {
  sessionStorage.removeItem(KEY);
}
