// Upscale a PNG with metasr's portable graph in Node.js (onnxruntime-node, pngjs; no Python, no network).
//
//   npm ci --ignore-scripts --prefix examples/node
//   node examples/node/upscale.mjs ARTIFACTS/metasr.portable.onnx in.png out.png 2.5
//   node examples/node/upscale.mjs ARTIFACTS/metasr.portable.size.onnx in.png out.png 1920x1080   (WxH)
//
// The graph takes the image as uint8 [H, W, 3] RGB and a float64 scale (or an int64 [2] size = [H', W']) and
// returns uint8 [H', W', 3]; everything else (projection, offsets, weights, clamping, rounding) is in the graph.
// The alpha channel is dropped; the output is an opaque RGB PNG. Scale limits: docs/portable.md.
import fs from "node:fs";
import ort from "onnxruntime-node";
import pngjs from "pngjs";

const [model, input, output, target] = process.argv.slice(2);
if (!target) {
  console.error("usage: node upscale.mjs MODEL.onnx IN.png OUT.png SCALE|WxH");
  process.exit(2);
}
const png = pngjs.PNG.sync.read(fs.readFileSync(input)); // RGBA, 8 bits per channel
const { width: w, height: h } = png;
const rgb = new Uint8Array(w * h * 3);
for (let i = 0; i < w * h; i++) rgb.set(png.data.subarray(4 * i, 4 * i + 3), 3 * i);

const session = await ort.InferenceSession.create(model);
const feeds = { image: new ort.Tensor("uint8", rgb, [h, w, 3]) };
const size = /^(\d+)x(\d+)$/.exec(target);
if (size) feeds.size = new ort.Tensor("int64", BigInt64Array.of(BigInt(size[2]), BigInt(size[1])), [2]);
else feeds.scale = new ort.Tensor("float64", Float64Array.of(Number(target)), []);
const names = session.inputNames.slice().sort(), wanted = Object.keys(feeds).sort();
if (names.join() !== wanted.join()) {
  console.error(`${model} takes ${session.inputNames.join(", ")}; give a ${size ? "scale" : "WxH size"} instead`);
  process.exit(2);
}
const out = (await session.run(feeds))[session.outputNames[0]];
const [H, W] = out.dims;
const result = new pngjs.PNG({ width: W, height: H, colorType: 2, inputColorType: 2, inputHasAlpha: false });
result.data = Buffer.from(out.data.buffer, out.data.byteOffset, out.data.byteLength);
fs.writeFileSync(output, pngjs.PNG.sync.write(result, { colorType: 2, inputColorType: 2, inputHasAlpha: false }));
console.log(`${input} (${w}x${h}) -> ${output} (${W}x${H})`);
