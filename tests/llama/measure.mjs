// Loads a GGUF in llama.cpp (node-llama-cpp's prebuilt CPU build, no GPU) and creates one context per
// requested size, printing llama.cpp's own log lines about buffers and caches, each context's after a
// "@@context <n_ctx>" marker. Usage: node measure.mjs MODEL.gguf N_UBATCH N_CTX [N_CTX...]
// MEASURE_FLASH_ATTENTION=on|off forces flash attention; unset, llama.cpp decides ("auto").
// MEASURE_CACHE_TYPE=Q8_0|Q4_0|... sets the KV cache type of keys and values (default F16).
import {getLlama, LlamaLogLevel} from "node-llama-cpp";

const [modelPath, ubatch, ...contexts] = process.argv.slice(2);
const wanted = /buffer size|llama_kv_cache: size|n_ctx |n_ubatch|flash_attn|creating .*KV cache|memory_recurrent|error|failed/i;
const llama = await getLlama({
    gpu: false, build: "never", logLevel: LlamaLogLevel.debug,
    logger: (level, message) => {
        if (wanted.test(message) && !message.startsWith("llama_graph_n_input") && !message.startsWith("~"))
            console.log(message.trimEnd());
    },
});
const model = await llama.loadModel({modelPath, gpuLayers: 0});
// llama.cpp's log lines arrive through a queue: give them time to come out before each marker.
const settle = () => new Promise((resolve) => setTimeout(resolve, 100));
for (const n of contexts) {
    await settle();
    console.log(`@@context ${n}`);
    // node-llama-cpp asks llama.cpp for one token more than batchSize for sliding-window models.
    const extra = (model.fileInsights.swaSize ?? 0) > 0 ? 1 : 0;
    const flash = process.env.MEASURE_FLASH_ATTENTION;
    const cacheType = process.env.MEASURE_CACHE_TYPE;
    const context = await model.createContext({
        contextSize: Number(n), batchSize: Number(ubatch) - extra, sequences: 1,
        ...(flash ? {flashAttention: flash === "on"} : {}),
        ...(cacheType ? {experimentalKvCacheKeyType: cacheType, experimentalKvCacheValueType: cacheType} : {}),
    });
    await context.dispose();
}
await settle();
console.log("@@done");
await model.dispose();
await llama.dispose();
