"""The one table of telemetry attribute names the collector reads.

Three vocabularies feed a decision event:

* the OpenTelemetry GenAI semantic conventions (``gen_ai.*``, ``error.type``) —
  still at Development stability, and the constants of the
  ``opentelemetry-semantic-conventions`` package are marked deprecated/moved,
  so the names live here, in one place, instead of being imported;
* OpenInference (``openinference.span.kind``, ``session.id``, ``tool.name``,
  ``retrieval.documents.N.document.id``, ``llm.prompt_template.version``…);
* the ``fedsignal.*`` namespace, for what neither convention carries: the
  versions of the artifacts that produced a turn, its intent and outcome.

This module is also the allow-list: the OTLP mapper reads *only* the keys
below and skips every other attribute without converting its value (prompts,
completions, tool arguments are never read). Aliases map several names to
one :class:`Slot`; when a span carries two, the last on the span wins.
"""

from __future__ import annotations

from enum import IntEnum


class Slot(IntEnum):
    """What an allow-listed attribute means for a decision event."""

    OPERATION = 0  # gen_ai.operation.name
    SPAN_KIND = 1  # openinference.span.kind
    TOOL_NAME = 2
    TOOL_CALL_ID = 3
    AGENT_NAME = 4
    CONVERSATION_ID = 5
    USER_ID = 6
    MODEL = 7
    FINISH_REASONS = 8
    INPUT_TOKENS = 9
    OUTPUT_TOKENS = 10
    ERROR_TYPE = 11
    PROMPT_VERSION = 12
    INTENT = 13
    ARTIFACT_VERSION = 14
    BUNDLE_VERSION = 15
    POLICY_VERSION = 16
    OUTCOME = 17
    HUMAN_EDITED = 18
    USER_REASKED = 19
    TOOL_EXPECTED = 20
    ESCALATED = 21
    ESCALATION_REQUESTED = 22
    POLICY_BLOCKED = 23
    FALLBACK = 24
    TIMED_OUT = 25
    RETRIEVAL_EMPTY = 26
    GUARDRAIL_NAME = 27
    GUARDRAIL_ACTION = 28
    GUARDRAIL_TRIGGERED = 29
    SAFETY_INCIDENT = 30
    TEXT = 31
    EVALUATION_NAME = 32
    EVALUATION_SCORE = 33
    EVALUATION_LABEL = 34
    RETRIEVAL_DOCUMENT_COUNT = 35
    EVENT_NAME = 36
    MODE = 37  # fedsignal.mode: live | shadow
    SHADOW_OF = 38  # fedsignal.shadow.of: the live turn a shadow turn shadows


# -- GenAI semantic conventions -------------------------------------------------
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_TOOL_NAME = "gen_ai.tool.name"
GEN_AI_TOOL_CALL_ID = "gen_ai.tool.call.id"
GEN_AI_AGENT_NAME = "gen_ai.agent.name"
GEN_AI_CONVERSATION_ID = "gen_ai.conversation.id"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_RESPONSE_FINISH_REASONS = "gen_ai.response.finish_reasons"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_USAGE_PROMPT_TOKENS = "gen_ai.usage.prompt_tokens"  # older name of input_tokens
GEN_AI_USAGE_COMPLETION_TOKENS = "gen_ai.usage.completion_tokens"  # older name of output_tokens
GEN_AI_EVALUATION_RESULT = "gen_ai.evaluation.result"  # event (log record) name
GEN_AI_EVALUATION_NAME = "gen_ai.evaluation.name"
GEN_AI_EVALUATION_SCORE_VALUE = "gen_ai.evaluation.score.value"
GEN_AI_EVALUATION_SCORE_LABEL = "gen_ai.evaluation.score.label"
# Guardrail outcomes: not in the semconv registry yet; the names guardrail
# instrumentations emit today.
GEN_AI_GUARDRAIL_NAME = "gen_ai.guardrail.name"
GEN_AI_GUARDRAIL_ACTION = "gen_ai.guardrail.action"
GEN_AI_GUARDRAIL_TRIGGERED = "gen_ai.guardrail.triggered"
ERROR_TYPE = "error.type"
EVENT_NAME = "event.name"  # older carrier of a log record's event name
ENDUSER_ID = "enduser.id"

OPERATION_CHAT = "chat"
OPERATION_TEXT_COMPLETION = "text_completion"
OPERATION_GENERATE_CONTENT = "generate_content"
OPERATION_EXECUTE_TOOL = "execute_tool"
OPERATION_INVOKE_AGENT = "invoke_agent"
OPERATION_CREATE_AGENT = "create_agent"

# -- OpenInference --------------------------------------------------------------
OPENINFERENCE_SPAN_KIND = "openinference.span.kind"
OI_SESSION_ID = "session.id"
OI_USER_ID = "user.id"
OI_TOOL_NAME = "tool.name"
OI_AGENT_NAME = "agent.name"
OI_LLM_MODEL_NAME = "llm.model_name"
OI_LLM_TOKEN_COUNT_PROMPT = "llm.token_count.prompt"
OI_LLM_TOKEN_COUNT_COMPLETION = "llm.token_count.completion"
OI_PROMPT_TEMPLATE_VERSION = "llm.prompt_template.version"
# OpenInference flattens lists: retrieval.documents.<N>.document.id
OI_RETRIEVAL_DOCUMENTS_PREFIX = "retrieval.documents."
OI_DOCUMENT_ID_SUFFIX = ".document.id"
#: Document ids are read for indices 0..MAX_INDEXED_DOCUMENTS-1.
MAX_INDEXED_DOCUMENTS = 1024

KIND_LLM = "LLM"
KIND_TOOL = "TOOL"
KIND_AGENT = "AGENT"
KIND_RETRIEVER = "RETRIEVER"
KIND_CHAIN = "CHAIN"
KIND_GUARDRAIL = "GUARDRAIL"
KIND_EVALUATOR = "EVALUATOR"

# -- fedsignal.* ------------------------------------------------------------------
FEDSIGNAL_INTENT = "fedsignal.intent"
FEDSIGNAL_ARTIFACT_VERSION = "fedsignal.artifact.version"
FEDSIGNAL_BUNDLE_VERSION = "fedsignal.bundle.version"
FEDSIGNAL_PROMPT_VERSION = "fedsignal.prompt.version"
FEDSIGNAL_POLICY_VERSION = "fedsignal.policy.version"
FEDSIGNAL_OUTCOME = "fedsignal.outcome"
FEDSIGNAL_HUMAN_EDITED = "fedsignal.human_edited"
FEDSIGNAL_USER_REASKED = "fedsignal.user_reasked"
FEDSIGNAL_TOOL_EXPECTED = "fedsignal.tool.expected"
FEDSIGNAL_ESCALATED = "fedsignal.escalated"
FEDSIGNAL_ESCALATION_REQUESTED = "fedsignal.escalation.requested"
FEDSIGNAL_POLICY_BLOCKED = "fedsignal.policy.blocked"
FEDSIGNAL_FALLBACK = "fedsignal.fallback"
FEDSIGNAL_TIMED_OUT = "fedsignal.timed_out"
FEDSIGNAL_RETRIEVAL_EMPTY = "fedsignal.retrieval.empty"
FEDSIGNAL_RETRIEVAL_DOCUMENT_COUNT = "fedsignal.retrieval.document_count"
FEDSIGNAL_SAFETY_INCIDENT = "fedsignal.safety_incident"
# Opt-in free text of the turn (redacted before it reaches the event).
FEDSIGNAL_TEXT = "fedsignal.text"
# A turn run with a rollout's shadow candidate beside the live path (docs/event-schema.md).
FEDSIGNAL_MODE = "fedsignal.mode"
FEDSIGNAL_SHADOW_OF = "fedsignal.shadow.of"

#: Span (and resource) attributes the mapper reads.
SPAN_ATTRIBUTES: dict[str, Slot] = {
    GEN_AI_OPERATION_NAME: Slot.OPERATION,
    OPENINFERENCE_SPAN_KIND: Slot.SPAN_KIND,
    GEN_AI_TOOL_NAME: Slot.TOOL_NAME,
    OI_TOOL_NAME: Slot.TOOL_NAME,
    GEN_AI_TOOL_CALL_ID: Slot.TOOL_CALL_ID,
    GEN_AI_AGENT_NAME: Slot.AGENT_NAME,
    OI_AGENT_NAME: Slot.AGENT_NAME,
    GEN_AI_CONVERSATION_ID: Slot.CONVERSATION_ID,
    OI_SESSION_ID: Slot.CONVERSATION_ID,
    OI_USER_ID: Slot.USER_ID,
    ENDUSER_ID: Slot.USER_ID,
    GEN_AI_REQUEST_MODEL: Slot.MODEL,
    GEN_AI_RESPONSE_MODEL: Slot.MODEL,
    OI_LLM_MODEL_NAME: Slot.MODEL,
    GEN_AI_RESPONSE_FINISH_REASONS: Slot.FINISH_REASONS,
    GEN_AI_USAGE_INPUT_TOKENS: Slot.INPUT_TOKENS,
    GEN_AI_USAGE_PROMPT_TOKENS: Slot.INPUT_TOKENS,
    OI_LLM_TOKEN_COUNT_PROMPT: Slot.INPUT_TOKENS,
    GEN_AI_USAGE_OUTPUT_TOKENS: Slot.OUTPUT_TOKENS,
    GEN_AI_USAGE_COMPLETION_TOKENS: Slot.OUTPUT_TOKENS,
    OI_LLM_TOKEN_COUNT_COMPLETION: Slot.OUTPUT_TOKENS,
    ERROR_TYPE: Slot.ERROR_TYPE,
    FEDSIGNAL_PROMPT_VERSION: Slot.PROMPT_VERSION,
    OI_PROMPT_TEMPLATE_VERSION: Slot.PROMPT_VERSION,
    FEDSIGNAL_INTENT: Slot.INTENT,
    FEDSIGNAL_ARTIFACT_VERSION: Slot.ARTIFACT_VERSION,
    FEDSIGNAL_BUNDLE_VERSION: Slot.BUNDLE_VERSION,
    FEDSIGNAL_POLICY_VERSION: Slot.POLICY_VERSION,
    FEDSIGNAL_OUTCOME: Slot.OUTCOME,
    FEDSIGNAL_HUMAN_EDITED: Slot.HUMAN_EDITED,
    FEDSIGNAL_USER_REASKED: Slot.USER_REASKED,
    FEDSIGNAL_TOOL_EXPECTED: Slot.TOOL_EXPECTED,
    FEDSIGNAL_ESCALATED: Slot.ESCALATED,
    FEDSIGNAL_ESCALATION_REQUESTED: Slot.ESCALATION_REQUESTED,
    FEDSIGNAL_POLICY_BLOCKED: Slot.POLICY_BLOCKED,
    FEDSIGNAL_FALLBACK: Slot.FALLBACK,
    FEDSIGNAL_TIMED_OUT: Slot.TIMED_OUT,
    FEDSIGNAL_RETRIEVAL_EMPTY: Slot.RETRIEVAL_EMPTY,
    FEDSIGNAL_RETRIEVAL_DOCUMENT_COUNT: Slot.RETRIEVAL_DOCUMENT_COUNT,
    FEDSIGNAL_SAFETY_INCIDENT: Slot.SAFETY_INCIDENT,
    FEDSIGNAL_TEXT: Slot.TEXT,
    FEDSIGNAL_MODE: Slot.MODE,
    FEDSIGNAL_SHADOW_OF: Slot.SHADOW_OF,
    GEN_AI_GUARDRAIL_NAME: Slot.GUARDRAIL_NAME,
    GEN_AI_GUARDRAIL_ACTION: Slot.GUARDRAIL_ACTION,
    GEN_AI_GUARDRAIL_TRIGGERED: Slot.GUARDRAIL_TRIGGERED,
    # An EVALUATOR span may carry its verdict as attributes.
    GEN_AI_EVALUATION_NAME: Slot.EVALUATION_NAME,
    GEN_AI_EVALUATION_SCORE_VALUE: Slot.EVALUATION_SCORE,
    GEN_AI_EVALUATION_SCORE_LABEL: Slot.EVALUATION_LABEL,
}

#: Where several keys feed one field, the key that wins when a span (or resource) carries more
#: than one of them, first; a winner present without a usable value still wins (the field stays
#: empty). The GenAI semantic conventions win over their older names and over OpenInference's;
#: the model that answered over the one requested.
ALIAS_PRECEDENCE: tuple[tuple[str, ...], ...] = (
    (GEN_AI_TOOL_NAME, OI_TOOL_NAME),
    (GEN_AI_AGENT_NAME, OI_AGENT_NAME),
    (GEN_AI_CONVERSATION_ID, OI_SESSION_ID),
    (OI_USER_ID, ENDUSER_ID),
    (GEN_AI_RESPONSE_MODEL, GEN_AI_REQUEST_MODEL, OI_LLM_MODEL_NAME),
    (GEN_AI_USAGE_INPUT_TOKENS, GEN_AI_USAGE_PROMPT_TOKENS, OI_LLM_TOKEN_COUNT_PROMPT),
    (GEN_AI_USAGE_OUTPUT_TOKENS, GEN_AI_USAGE_COMPLETION_TOKENS, OI_LLM_TOKEN_COUNT_COMPLETION),
    (FEDSIGNAL_PROMPT_VERSION, OI_PROMPT_TEMPLATE_VERSION),
)

#: For each key that an alias can beat, the keys that beat it (derived from ALIAS_PRECEDENCE).
BEATEN_BY: dict[str, tuple[str, ...]] = {
    key: order[:i] for order in ALIAS_PRECEDENCE for i, key in enumerate(order) if i
}


#: Attributes read from a ``gen_ai.evaluation.result`` log record or span event.
EVALUATION_ATTRIBUTES: dict[str, Slot] = {
    GEN_AI_EVALUATION_NAME: Slot.EVALUATION_NAME,
    GEN_AI_EVALUATION_SCORE_VALUE: Slot.EVALUATION_SCORE,
    GEN_AI_EVALUATION_SCORE_LABEL: Slot.EVALUATION_LABEL,
    EVENT_NAME: Slot.EVENT_NAME,
}

#: Guardrail actions that mean "the guardrail did nothing".
GUARDRAIL_PASSING_ACTIONS = frozenset({"", "allow", "allowed", "pass", "passed", "none", "noop", "log"})
#: Guardrail actions that block the turn (policy_blocked), beyond merely flagging it.
GUARDRAIL_BLOCKING_ACTIONS = frozenset({"block", "blocked", "deny", "denied", "reject", "rejected", "refuse"})
