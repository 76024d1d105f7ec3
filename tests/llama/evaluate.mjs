// Loads each GGUF given in llama.cpp (node-llama-cpp's prebuilt CPU build) from that path, the way a
// tool would load it from its own folder, and generates a few tokens greedily after "Hello". Prints
// "@@tokens <path index> <n> <ids>" per model. Usage: node evaluate.mjs N_TOKENS MODEL.gguf [MODEL.gguf...]
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [count, ...modelPaths] = process.argv.slice(2);
const llama = await getLlama({gpu: false, build: "never", logLevel: LlamaLogLevel.error});
for (const [index, modelPath] of modelPaths.entries()) {
    const model = await llama.loadModel({modelPath, gpuLayers: 0});
    const context = await model.createContext({contextSize: 256});
    const sequence = context.getSequence();
    const generated = [];
    for await (const token of sequence.evaluate(model.tokenize("Hello"), {temperature: 0})) {
        generated.push(token);
        if (generated.length >= Number(count)) break;
    }
    console.log(`@@tokens ${index} ${generated.length} ${generated.join(",")}`);
    await context.dispose();
    await model.dispose();
}
await llama.dispose();
