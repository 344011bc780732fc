// The variables that tell an execution where the plane is, in one place: AMCTL_SERVER for amctl
// and the RuntimeService, and the base URLs and API keys the OpenAI, Anthropic and Ollama SDKs
// read, pointing at the plane's model gateway with the attempt's own credential as the key, so
// an unmodified agent's model calls are governed (docs/model-gateway.md). Set where the
// attempt's environment is made and again wherever the plane's address changes on the way
// (a remote worker's view of it, the sandbox's inside port).
export function planeEnvironment(server: string, credential: string | undefined): Record<string, string> {
  const base = server.replace(/\/+$/, "");
  return {
    AMCTL_SERVER: base,
    OPENAI_BASE_URL: `${base}/v1`,
    ANTHROPIC_BASE_URL: base,
    OLLAMA_HOST: base,
    ...(credential !== undefined ? { OPENAI_API_KEY: credential, ANTHROPIC_API_KEY: credential } : {}),
  };
}
