using SensMerging.Abstractions;

namespace SensMerging.Runtime.Tokenization;

/// <summary>
/// Shared sample encoding: optional BOS, then the prompt, then the response (plus EOS when the sample has a response
/// and the tokenizer has one). <see cref="TokenizedSample.LossMask"/>[t] is true where position t predicts a response
/// token (or the EOS); for plain text, every position but the last.
/// </summary>
public abstract class TextTokenizerBase : ITextTokenizer
{
    /// <summary>Beginning-of-sequence id prepended by <see cref="Encode"/>, or -1 when the model uses none.</summary>
    public abstract int BosTokenId { get; }

    public abstract int EosTokenId { get; }

    /// <summary>Padding id for batches (pad, else EOS, else 0).</summary>
    public abstract int PadTokenId { get; }

    /// <summary>Number of ids the tokenizer can produce (including special tokens).</summary>
    public abstract int VocabularySize { get; }

    public abstract IReadOnlyList<int> EncodeText(string text);

    public abstract string Decode(IEnumerable<int> ids);

    /// <summary>
    /// Encodes a sample to at most <paramref name="maxLength"/> tokens. When prompt and response do not fit, the
    /// response keeps its head and the prompt its tail, the response getting at least half of the room (or all of it
    /// if shorter), so a prompt/response sample always keeps loss positions.
    /// </summary>
    public TokenizedSample Encode(TextSample sample, int maxLength)
    {
        ArgumentNullException.ThrowIfNull(sample);
        var bos = BosTokenId >= 0 ? 1 : 0;
        if (maxLength < bos + 2)
        {
            throw new ArgumentOutOfRangeException(nameof(maxLength), maxLength, $"max_length must be at least {bos + 2} tokens.");
        }
        var room = maxLength - bos;
        var prompt = EncodeText(sample.Prompt);
        if (sample.Response is null)
        {
            var take = Math.Min(prompt.Count, room);
            var ids = new long[bos + take];
            if (bos == 1)
            {
                ids[0] = BosTokenId;
            }
            for (var i = 0; i < take; i++)
            {
                ids[bos + i] = prompt[i];
            }
            var mask = new bool[ids.Length];
            for (var t = 0; t < ids.Length - 1; t++)
            {
                mask[t] = true;
            }
            return new TokenizedSample(ids, mask);
        }

        var response = new List<int>(EncodeText(sample.Response));
        if (EosTokenId >= 0)
        {
            response.Add(EosTokenId);
        }
        var promptKeep = prompt.Count;
        var responseKeep = response.Count;
        if (promptKeep + responseKeep > room)
        {
            responseKeep = Math.Min(response.Count, Math.Max(room - prompt.Count, room / 2));
            promptKeep = Math.Min(prompt.Count, room - responseKeep);
        }
        var all = new long[bos + promptKeep + responseKeep];
        var at = 0;
        if (bos == 1)
        {
            all[at++] = BosTokenId;
        }
        for (var i = prompt.Count - promptKeep; i < prompt.Count; i++)
        {
            all[at++] = prompt[i];
        }
        var firstResponse = at;
        for (var i = 0; i < responseKeep; i++)
        {
            all[at++] = response[i];
        }
        var lossMask = new bool[all.Length];
        for (var t = Math.Max(firstResponse - 1, 0); t < all.Length - 1; t++)
        {
            lossMask[t] = true;
        }
        return new TokenizedSample(all, lossMask);
    }
}
