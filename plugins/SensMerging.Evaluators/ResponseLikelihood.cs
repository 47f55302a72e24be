using SensMerging.Abstractions;
using static TorchSharp.torch;

namespace SensMerging.Evaluators;

/// <summary>Summed negative log-likelihood of the loss-mask tokens (the responses and their EOS) under a model.</summary>
public static class ResponseLikelihood
{
    /// <summary>
    /// Sum over samples and loss-mask positions t of <c>-log p(ids[t+1] | ids[..t])</c>, from
    /// <see cref="ICausalLanguageModel.Forward"/> logits of right-padded batches, and the number of such tokens.
    /// </summary>
    public static (double Nll, long Tokens) Sum(ICausalLanguageModel model, IReadOnlyList<TextSample> samples, int maxLength, int batchSize, CancellationToken cancellationToken)
    {
        ArgumentNullException.ThrowIfNull(model);
        ArgumentNullException.ThrowIfNull(samples);
        ArgumentOutOfRangeException.ThrowIfLessThan(batchSize, 1);
        var tokenizer = model.Tokenizer;
        var pad = Math.Max(tokenizer.EosTokenId, 0);
        double nll = 0;
        long tokens = 0;
        for (var start = 0; start < samples.Count; start += batchSize)
        {
            cancellationToken.ThrowIfCancellationRequested();
            var count = Math.Min(batchSize, samples.Count - start);
            var encoded = new TokenizedSample[count];
            for (var i = 0; i < count; i++)
            {
                encoded[i] = tokenizer.Encode(samples[start + i], maxLength);
            }
            var width = encoded.Max(e => e.Length);
            var ids = new long[count * width];
            Array.Fill(ids, pad);
            var positions = new List<long>();
            var targets = new List<long>();
            for (var i = 0; i < count; i++)
            {
                var sample = encoded[i];
                Array.Copy(sample.Ids, 0, ids, i * width, sample.Length);
                for (var t = 0; t + 1 < sample.Length && t < sample.LossMask.Length; t++)
                {
                    if (sample.LossMask[t])
                    {
                        positions.Add((i * width) + t);
                        targets.Add(sample.Ids[t + 1]);
                    }
                }
            }
            if (positions.Count == 0)
            {
                continue;
            }
            using (NewDisposeScope())
            {
                using var input = tensor(ids, [count, width], ScalarType.Int64);
                var logits = model.Forward(input);
                var device = logits.device;
                var selected = logits.reshape(count * width, logits.shape[2]).index_select(0, tensor(positions.ToArray(), ScalarType.Int64, device));
                var logProbabilities = nn.functional.log_softmax(selected.to(ScalarType.Float64), -1);
                var picked = logProbabilities.gather(1, tensor(targets.ToArray(), ScalarType.Int64, device).unsqueeze(1));
                nll -= picked.sum().cpu().item<double>();
            }
            tokens += positions.Count;
        }
        return (nll, tokens);
    }
}
