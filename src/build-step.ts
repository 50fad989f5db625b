/**
 * The build's second step (`npm run build`, after tsc): writes what every process would otherwise work out at its
 * start into node_modules/.cache/care-gateway/ — from the R4 definitions the slim definition files, the precompiled
 * schema validators and each module's derivation (the validation model, the search-parameter index, the summary
 * elements, the resource types); from mappings/ every file checked against its schema. A process that finds none
 * of them works them out itself, only slower; a mapping file edited after the build is read and checked as ever.
 */
import { writeCheckedFiles } from './data-file.js';
import { writeDerivations, writeSlimDefinitions } from './fhir/definitions.js';
import { writePrecompiledValidators } from './fhir/schema-validators.js';
import './fhir/validate.js';
import './fhir/searchparams.js';
import './api/shape.js';

writeSlimDefinitions();
writePrecompiledValidators();
writeDerivations();
writeCheckedFiles();
