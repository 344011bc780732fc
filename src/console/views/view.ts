// What every view gets: where to draw, the route it shows, what the server allows, and a
// signal that aborts when the operator leaves the view (its streams end with it).
import type { Route } from "../route.js";

export interface ViewContext {
  root: HTMLElement;
  route: Route;
  /** Whether the server runs with --console-actions. */
  actions: boolean;
  signal: AbortSignal;
}
