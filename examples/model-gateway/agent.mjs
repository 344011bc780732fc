// An agent that has never heard of amctl: plain OpenAI and Anthropic SDK calls, configured by
// nothing but the environment every execution gets (OPENAI_BASE_URL, OPENAI_API_KEY,
// ANTHROPIC_BASE_URL, ANTHROPIC_API_KEY). Run as an execution, each call goes through the
// plane's model gateway: decided by policy, charged to the budget, audited.
import Anthropic from "@anthropic-ai/sdk";
import OpenAI from "openai";

const model = process.env.AGENT_MODEL ?? "gpt-4o-mini";
const messages = [{ role: "user", content: "Say hello." }];

const openai = new OpenAI();
const completion = await openai.chat.completions.create({ model, messages });
console.log(`openai: ${completion.choices[0].message.content.trim()}`);

let streamed = "";
for await (const chunk of await openai.chat.completions.create({ model, messages, stream: true })) streamed += chunk.choices[0]?.delta?.content ?? "";
console.log(`openai stream: ${streamed.trim()}`);

const anthropic = new Anthropic();
const message = await anthropic.messages.create({ model: "claude-sonnet-4-5", max_tokens: 100, messages });
console.log(`anthropic: ${message.content[0].text.trim()}`);
const final = await anthropic.messages.stream({ model: "claude-sonnet-4-5", max_tokens: 100, messages }).finalMessage();
console.log(`anthropic stream: ${final.content[0].text.trim()} (${final.usage.output_tokens} tokens)`);

// A model the policy does not allow: the SDK sees the provider's own kind of error.
try {
  await openai.chat.completions.create({ model: "forbidden-model", messages });
  console.log("forbidden-model: allowed?!");
} catch (error) {
  console.log(`forbidden-model: refused ${error.status} ${error.error?.type ?? error.type}`);
}
