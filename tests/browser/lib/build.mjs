// `npm test` / `npm run rtt` run this first: builds the server and the native
// peer (a no-op when they are current). CHORUS_SKIP_BUILD=1 skips it (scripts/test.sh
// has built them already).
import { cargoBuild } from './harness.mjs';

if (!process.env.CHORUS_SKIP_BUILD) cargoBuild();
