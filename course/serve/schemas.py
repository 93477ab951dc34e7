"""The HTTP contract: request and response bodies as pydantic models.

FastAPI reads these to validate every request (a wrong type, a missing
field, an unknown field or an empty text is answered 422 with the field and
the reason) and to draw the OpenAPI page at ``/docs``.  Clients and tests
rely on exactly these shapes::

    POST /classify   {"text": "..."}  or {"texts": ["...", ...]} -> {"label", "score"} or a list of them
    POST /embed      {"text": "..."}                             -> {"embedding": [float, ...]}
    POST /summarize  {"text": "...", "max_sentences": 3}          -> {"summary": "..."}
    POST /generate   {"prompt", "max_new_tokens", "temperature", "top_p", "stream"}
                                                                  -> {"text": "..."} or an event stream
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

#: Characters one text may have (the body-size limit comes first, in bytes).
MAX_TEXT_CHARS = 20_000
#: Texts one /classify request may carry.
MAX_TEXTS = 64


def _not_blank(value: str, field: str) -> str:
    """Reject empty and all-space texts with a message that names the field."""
    if not value.strip():
        raise ValueError(f"{field} is empty: send at least one non-space character")
    return value


Text = Annotated[str, Field(max_length=MAX_TEXT_CHARS)]


class _Strict(BaseModel):
    """Unknown fields are an error (a typo such as "txt" must not be silently ignored)."""

    model_config = ConfigDict(extra="forbid")


class ClassifyRequest(_Strict):
    """One text (``text``) or several (``texts``), not both."""

    text: Text | None = Field(None, examples=["A wonderful, moving film."])
    texts: list[Text] | None = Field(None, max_length=MAX_TEXTS, examples=[["Great value.", "Never again."]])

    @model_validator(mode="after")
    def _one_of(self) -> ClassifyRequest:
        if (self.text is None) == (self.texts is None):
            raise ValueError("send either 'text' (one string) or 'texts' (a list of strings), not both or neither")
        if self.text is not None:
            _not_blank(self.text, "text")
        else:
            if not self.texts:
                raise ValueError("texts is an empty list: send at least one text")
            for index, text in enumerate(self.texts):
                _not_blank(text, f"texts[{index}]")
        return self


class ClassifyResult(BaseModel):
    """The most likely label and its probability."""

    label: str
    score: float


class EmbedRequest(_Strict):
    text: Text = Field(examples=["The soup was cold."])

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return _not_blank(value, "text")


class EmbedResponse(BaseModel):
    """A unit-length sentence embedding (cosine similarity = dot product)."""

    embedding: list[float]


class SummarizeRequest(_Strict):
    text: Text = Field(examples=["First sentence. Second sentence. Third sentence."])
    max_sentences: int = Field(3, ge=1, le=50, description="sentences to keep (extractive) or the length budget")

    @field_validator("text")
    @classmethod
    def _text(cls, value: str) -> str:
        return _not_blank(value, "text")


class SummarizeResponse(BaseModel):
    summary: str


class GenerateRequest(_Strict):
    prompt: Text = Field(examples=["The film was"])
    max_new_tokens: int = Field(32, ge=1, le=512)
    temperature: float = Field(1.0, ge=0.0, le=5.0, description="0 means greedy decoding")
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    stream: bool = Field(False, description="true: server-sent events, one per piece of text")

    @field_validator("prompt")
    @classmethod
    def _prompt(cls, value: str) -> str:
        return _not_blank(value, "prompt")


class GenerateResponse(BaseModel):
    text: str
