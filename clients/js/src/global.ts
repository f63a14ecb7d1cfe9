// The browser global build: `<script src="/demo/tickfan.js">` defines
// `Tickfan` (the class, with `backoffDelay` and `backoffCap` on it).
import { Tickfan, backoffDelay, backoffCap } from "./index";

(globalThis as any).Tickfan = Object.assign(Tickfan, { Tickfan, backoffDelay, backoffCap });
