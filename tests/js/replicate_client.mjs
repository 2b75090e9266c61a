// The official Replicate JavaScript client against lambdaml's /v1, unmodified: run by tests/test_v1.py,
// which reads the one JSON line printed at the end. LAMBDAML_V1 is the base URL (ending in /v1), TOKEN the token.
import Replicate from "replicate";

const replicate = new Replicate({ auth: process.env.TOKEN, baseUrl: process.env.LAMBDAML_V1 });
const seen = {};

seen.run = await replicate.run("lambdaml/v1-hello", { input: { name: "js" } });
seen.iterator = await replicate.run("lambdaml/v1-count", { input: { count: 3 } });

const flipped = await replicate.run("lambdaml/v1-flip", { input: { data: Buffer.from("from node") } }); // uploaded to /v1/files
seen.file = Buffer.from(await (await flipped.blob()).arrayBuffer()).toString();

const created = await replicate.predictions.create({ model: "lambdaml/v1-hello", input: { name: "poll" } });
let got = await replicate.predictions.get(created.id);
while (!["succeeded", "failed", "canceled"].includes(got.status)) {
  await new Promise((resolve) => setTimeout(resolve, 100));
  got = await replicate.predictions.get(created.id);
}
seen.created = { status: created.status, model: created.model, output: got.output };

const slow = await replicate.predictions.create({ model: "lambdaml/v1-hello", input: { delay: 30 } });
seen.canceled = (await replicate.predictions.cancel(slow.id)).status;

seen.stream = [];
for await (const event of replicate.stream("lambdaml/v1-count", { input: { count: 3 } })) {
  seen.stream.push([event.event, `${event}`]);
}

try {
  await replicate.run("lambdaml/v1-hello", { input: { name: 3 } });
} catch (error) {
  seen.invalid = { status: error.response?.status, message: error.message };
}
console.log(JSON.stringify(seen));
