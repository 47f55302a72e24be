using SensMerging.Abstractions;
using static TorchSharp.torch;

namespace SensMerging.Evaluators;

/// <summary>
/// Batched greedy decoding through <see cref="ICausalLanguageModel.Forward"/> only (no cache: every step runs the
/// whole prefix). Prompts are right-padded; since attention is causal, the logits at a row's last real position do
/// not depend on the padding after it. A row stops at EOS, at a token whose text holds a newline, or after
/// <c>maxNewTokens</c> tokens; neither EOS nor the newline token is part of its output.
/// </summary>
public static class GreedyDecoder
{
    /// <summary>The greedy continuation of each prompt, decoded to text.</summary>
    /// <param name="model">The model.</param>
    /// <param name="prompts">Prompt texts (encoded with the model's tokenizer, BOS included where it uses one).</param>
    /// <param name="maxNewTokens">Most tokens generated per prompt.</param>
    /// <param name="maxLength">Prompt tokens kept (the head) before generation.</param>
    /// <param name="batchSize">Prompts per forward pass.</param>
    /// <param name="cancellationToken">Stops between steps.</param>
    public static DecodeResult Generate(ICausalLanguageModel model, IReadOnlyList<string> prompts, int maxNewTokens, int maxLength, int batchSize, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(prompts);
        ArgumentOutOfRangeException.ThrowIfLessThan(maxNewTokens, 1);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var tokenizer = model.Tokenizer;
        var eos = tokenizer.EosTokenId;
        var pad = Math.Max(eos, 0);
        var stopsLine = new Dictionary<long, bool>();
        var texts = new string[prompts.Count];
        long generated = 0;
        for (var start = 0; start < prompts.Count; start += batchSize)
        {
            var count = Math.Min(batchSize, prompts.Count - start);
            var encoded = new long[count][];
            for (var i = 0; i < count; i++)
            {
                encoded[i] = tokenizer.Encode(new TextSample(prompts[start + i]), maxLength).Ids;
                if (encoded[i].Length == 0)
                {
                    throw new InvalidOperationException($"Prompt {start + i} encodes to no tokens; greedy decoding needs at least one.");
                }
            }
            var width = encoded.Max(e => e.Length) + maxNewTokens;
            var buffer = new long[count * width];
            Array.Fill(buffer, pad);
            var cursor = new int[count];
            var done = new bool[count];
            var outputs = new List<int>[count];
            for (var i = 0; i < count; i++)
            {
                Array.Copy(encoded[i], 0, buffer, i * width, encoded[i].Length);
                cursor[i] = encoded[i].Length;
                outputs[i] = [];
            }
            for (var step = 0; step < maxNewTokens && done.Contains(false); step++)
            {
                cancellationToken.ThrowIfCancellationRequested();
                var length = 0;
                for (var i = 0; i < count; i++)
                {
                    if (!done[i])
                    {
                        length = Math.Max(length, cursor[i]);
                    }
                }
                var ids = new long[count * length];
                var last = new long[count];
                for (var i = 0; i < count; i++)
                {
                    Array.Copy(buffer, i * width, ids, i * length, length);
                    last[i] = (i * length) + Math.Min(cursor[i], length) - 1;
                }
                long[] next;
                using (NewDisposeScope())
                {
                    using var input = tensor(ids, [count, length], ScalarType.Int64);
                    var logits = model.Forward(input);
                    var rows = logits.reshape(count * length, logits.shape[2]).index_select(0, tensor(last, ScalarType.Int64, logits.device));
                    next = rows.argmax(-1).cpu().data<long>().ToArray();
                }
                for (var i = 0; i < count; i++)
                {
                    if (done[i])
                    {
                        continue;
                    }
                    var token = next[i];
                    if (token == eos || EndsLine(tokenizer, token, stopsLine))
                    {
                        done[i] = true;
                        continue;
                    }
                    outputs[i].Add((int)token);
                    buffer[(i * width) + cursor[i]] = token;
                    cursor[i]++;
                    generated++;
                }
            }
            for (var i = 0; i < count; i++)
            {
                texts[start + i] = tokenizer.Decode(outputs[i]);
            }
        }
        return new DecodeResult(texts, generated);
    }

    private static bool EndsLine(ITextTokenizer tokenizer, long token, Dictionary<long, bool> cache)
    {
        if (!cache.TryGetValue(token, out var stops))
        {
            stops = tokenizer.Decode([(int)token]).Contains('\n', StringComparison.Ordinal);
            cache[token] = stops;
        }
        return stops;
    }
}

/// <summary>The generated texts, one per prompt, and how many tokens were generated in all.</summary>
public sealed record DecodeResult(IReadOnlyList<string> Texts, long GeneratedTokens);
