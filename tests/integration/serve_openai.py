"""The official `openai` client (PyPI) against `pwb serve`: chat, streamed chat, completions with
logprobs and echo, the model list, and an unknown model's error. Run by tests/integration/test_serve.c:
    python serve_openai.py BASE_URL"""
import sys

import openai

base = sys.argv[1]
client = openai.OpenAI(base_url=base, api_key="unused")

models = sorted(m.id for m in client.models.list().data)
assert models == ["base", "soft"], models

chat = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "Once upon a time"}],
                                      max_tokens=12, temperature=0)
assert chat.choices[0].message.role == "assistant"
assert chat.choices[0].message.content, chat
assert chat.usage.completion_tokens > 0 and chat.usage.prompt_tokens > 0, chat.usage

pieces = []
usage = None
for chunk in client.chat.completions.create(model="soft", messages=[{"role": "user", "content": "Tom and the dog"}],
                                            max_tokens=12, temperature=0, stream=True,
                                            stream_options={"include_usage": True}):
    if chunk.usage:
        usage = chunk.usage
    for c in chunk.choices:
        if c.delta and c.delta.content:
            pieces.append(c.delta.content)
streamed = "".join(pieces)
whole = client.chat.completions.create(model="soft", messages=[{"role": "user", "content": "Tom and the dog"}],
                                       max_tokens=12, temperature=0)
assert streamed == whole.choices[0].message.content, (streamed, whole.choices[0].message.content)
assert usage and usage.completion_tokens == whole.usage.completion_tokens, usage

comp = client.completions.create(model="soft", prompt="Lily went to the park", max_tokens=3, temperature=0,
                                 logprobs=2, echo=True)
lp = comp.choices[0].logprobs
assert comp.choices[0].text.startswith("Lily went to the park"), comp.choices[0].text
assert lp.token_logprobs[0] is None, lp.token_logprobs[:3]
assert all(x is not None and x <= 0 for x in lp.token_logprobs[1:]), lp.token_logprobs
assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset)
assert lp.text_offset == sorted(lp.text_offset)
assert all(isinstance(t, dict) and len(t) >= 1 for t in lp.top_logprobs[1:]), lp.top_logprobs[:3]
assert "".join(lp.tokens) == comp.choices[0].text, (lp.tokens, comp.choices[0].text)

chatlp = client.chat.completions.create(model="base", messages=[{"role": "user", "content": "Hi"}], max_tokens=4,
                                        temperature=0, logprobs=True, top_logprobs=2)
content = chatlp.choices[0].logprobs.content
assert content and all(len(t.top_logprobs) == 2 for t in content), content

try:
    client.completions.create(model="nope", prompt="x", max_tokens=1)
    raise AssertionError("an unknown model was accepted")
except openai.NotFoundError as e:
    assert "nope" in str(e), e

print("openai client: all checks passed")
