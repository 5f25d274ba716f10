// TEMPORARY (removed once the key API exists): plaintext codec for REQUIRE_E2EE=false dev runs.
import { b64encode, b64decode, utf8, utf8decode } from "./crypto.js";
import { urlToStd, stdToUrl } from "./wire.js";
export class PlainKeys {
  constructor(deviceId) { this.deviceId = deviceId; }
  async writableEpoch() { return 0; }
  async encrypt({ content }) { return { epoch: 0, body: urlToStd(b64encode(utf8(JSON.stringify(content)))) }; }
  async decrypt(msg) { return JSON.parse(utf8decode(b64decode(stdToUrl(msg.body)))); }
  async fetchEnvelopes() { return 0; }
  async conversationDevices() { return { epoch: 0, rotationRequired: false, devices: [] }; }
  async rewrapFor() { return 0; }
  async safetyNumber() { return "000000000000000000000000000000"; }
}
