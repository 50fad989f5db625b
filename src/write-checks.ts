/** The checks every write passes, from any source: FHIR validation and the status lifecycles of plan and activities. */
import type { RepositoryOptions } from './store/repository.js';
import { assertValid } from './fhir/validate.js';
import { checkStatusTransition } from './careplan/lifecycle.js';

export const writeChecks: RepositoryOptions = { validate: assertValid, checkUpdate: checkStatusTransition };
