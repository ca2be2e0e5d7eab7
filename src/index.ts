/**
 * selfsteer's library entry point (`import ... from "selfsteer"`): the SSO pipeline and its objective.
 * Build SSO records with any Policy (an OpenAI-compatible server or the local engine), filter and
 * export them, read pair files, and evaluate the SSO objective on per-sequence log-probs. The engine
 * has its own entry point, "selfsteer/engine". docs/algorithm.md explains every piece.
 */

// Reward-model reports.
export { type RewardBenchReport, rewardBenchReport } from "./eval/rewardbench.js";
// Policies: where answers come from.
export { type LocalGeneration, LocalPolicy, type LocalPolicyOptions } from "./policy/local.js";
export { OpenAIPolicy, type OpenAIPolicyOptions, OpenAIRequestError } from "./policy/openai.js";
export type { ChatMessage, GenerateRequest, Generation, Policy, TokenUsage } from "./policy/types.js";
// Building records.
export {
  type BuildHooks,
  BuildInterruptedError,
  type BuildOptions,
  type BuildResult,
  type BuildSummary,
  buildRecords,
  type DropSink,
  type RecordSink,
} from "./sso/builder.js";
export {
  type Catalog,
  DEFAULT_CATALOG,
  FEATURE_NAMES,
  type FeatureName,
  type FeatureSpec,
  loadCatalog,
} from "./sso/catalog.js";
export { EXPORT_FORMATS, type ExportFormat, exportFile, renderExport } from "./sso/export.js";
export { DROP_REASONS, type DropReason, filterRecord } from "./sso/filters.js";
// The objective: pure math on per-sequence log-probs, with analytic gradients.
export {
  baseLoss,
  btLoss,
  dpoLoss,
  hingeLoss,
  ipoLoss,
  LOSS_NAMES,
  type LossName,
  type ObjectiveConfig,
  type ObjectiveRecord,
  type ObjectiveResult,
  objectiveConfigSchema,
  orpoLoss,
  type PairLoss,
  recordObjective,
  SEQ_KEYS,
  type SeqKey,
  type SeqValues,
  simpoLoss,
  ssoObjective,
  steeringWeight,
} from "./sso/objective.js";
// Pairs, records and their file formats; exports for other trainers.
export {
  countFormats,
  PAIR_FORMATS,
  type PairFormat,
  type PreferencePair,
  type PreferenceRecord,
  pairFromRecord,
  pairFromText,
  parsePair,
  type RewardBenchRow,
  readPairs,
  readPreferenceRecords,
  recordFromPair,
  type TextPair,
} from "./sso/pairs.js";
export { buildSystemPrompt } from "./sso/prompts.js";
export {
  type DropEntry,
  openDropLog,
  openRecordWriter,
  type PrincipleEntry,
  type QueryPrompt,
  readPrompts,
  readRecords,
  type SsoRecord,
  SsoRecordSchema,
} from "./sso/records.js";

// Errors: bad input is a UserError naming file, line and field.
export { UserError } from "./util/errors.js";
