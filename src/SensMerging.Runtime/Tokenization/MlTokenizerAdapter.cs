using System.Text.Json.Nodes;
using System.Text.RegularExpressions;
using Microsoft.ML.Tokenizers;

namespace SensMerging.Runtime.Tokenization;

/// <summary>
/// A Microsoft.ML.Tokenizers tokenizer (byte-level BPE from tokenizer.json, or SentencePiece from tokenizer.model)
/// behind the runtime's tokenizer interface. Special tokens are added by <see cref="TextTokenizerBase.Encode"/>, never
/// by the inner tokenizer.
/// </summary>
public sealed class MlTokenizerAdapter : TextTokenizerBase
{
    /// <summary>GPT-2's pre-tokenizer regex (the ByteLevel pre-tokenizer with use_regex=true).</summary>
    internal const string Gpt2Pattern = @"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";

    private readonly Tokenizer _inner;
    private readonly HashSet<int> _special;
    private readonly bool _addPrefixSpace;

    private MlTokenizerAdapter(Tokenizer inner, HashSet<int> special, int vocabularySize, (int Bos, int Eos, int Pad) ids, bool addPrefixSpace, string kind)
    {
        _inner = inner;
        _special = special;
        _addPrefixSpace = addPrefixSpace;
        VocabularySize = vocabularySize;
        BosTokenId = ids.Bos;
        EosTokenId = ids.Eos;
        PadTokenId = ids.Pad;
        Kind = kind;
    }

    public override int BosTokenId { get; }

    public override int EosTokenId { get; }

    public override int PadTokenId { get; }

    public override int VocabularySize { get; }

    /// <summary><c>bpe</c> or <c>sentencepiece</c>.</summary>
    public string Kind { get; }

    /// <summary>The Microsoft.ML.Tokenizers object doing the work.</summary>
    public Tokenizer Inner => _inner;

    public override IReadOnlyList<int> EncodeText(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        if (text.Length == 0)
        {
            return [];
        }
        return _inner.EncodeToIds(_addPrefixSpace && !text.StartsWith(' ') ? " " + text : text);
    }

    public override string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        return _inner.Decode(ids.Where(id => !_special.Contains(id)));
    }

    /// <summary>Byte-level BPE from a tokenizer.json whose model type is BPE.</summary>
    internal static MlTokenizerAdapter FromBpeJson(JsonObject root, string path, SpecialTokenSettings settings)
    {
        var model = (JsonObject)root["model"]!;
        if (model["vocab"] is not JsonObject vocabNode)
        {
            throw new InvalidDataException($"{path}: BPE model has no vocab object.");
        }
        if (!IsByteLevel(root))
        {
            throw new InvalidDataException($"{path}: only byte-level BPE tokenizer.json files are supported (no ByteLevel pre-tokenizer or decoder found); for SentencePiece models provide tokenizer.model.");
        }
        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (token, id) in vocabNode)
        {
            vocabulary[token] = id!.GetValue<int>();
        }
        var merges = new List<string>();
        foreach (var merge in model["merges"]?.AsArray() ?? [])
        {
            merges.Add(merge switch
            {
                JsonArray pair when pair.Count == 2 => pair[0]!.GetValue<string>() + " " + pair[1]!.GetValue<string>(),
                JsonValue value => value.GetValue<string>(),
                _ => throw new InvalidDataException($"{path}: BPE merge entry {merge?.ToJsonString()} is neither \"a b\" nor [\"a\", \"b\"]."),
            });
        }
        var specialTokens = new Dictionary<string, int>(StringComparer.Ordinal);
        var specialIds = new HashSet<int>();
        foreach (var (content, id, special) in HuggingFaceTokenizerJson.AddedTokens(root))
        {
            vocabulary.TryAdd(content, id);
            if (special)
            {
                specialTokens[content] = id;
                specialIds.Add(id);
            }
        }
        var pattern = SplitPattern(root["pre_tokenizer"]) ?? Gpt2Pattern;
        var options = new BpeOptions(vocabulary)
        {
            Merges = merges,
            ByteLevel = true,
            PreTokenizer = new RegexPreTokenizer(new Regex(pattern, RegexOptions.Compiled), specialTokens.Count == 0 ? null : specialTokens),
            SpecialTokens = specialTokens.Count == 0 ? null : specialTokens,
            UnknownToken = model["unk_token"]?.GetValue<string>(),
            FuseUnknownTokens = model["fuse_unk"]?.GetValue<bool>() ?? false,
        };
        var tokenizer = BpeTokenizer.Create(options);
        var ids = settings.Resolve(vocabulary);
        var prefixSpace = FindAddPrefixSpace(root["pre_tokenizer"]);
        return new MlTokenizerAdapter(tokenizer, specialIds, vocabulary.Values.Max() + 1, ids, prefixSpace, "bpe");
    }

    /// <summary>SentencePiece from tokenizer.model (Llama-2/Mistral style).</summary>
    internal static MlTokenizerAdapter FromSentencePiece(string modelPath, SpecialTokenSettings settings)
    {
        SentencePieceTokenizer tokenizer;
        using (var stream = File.OpenRead(modelPath))
        {
            try
            {
                tokenizer = LlamaTokenizer.Create(stream, addBeginOfSentence: false, addEndOfSentence: false);
            }
            catch (Exception ex) when (ex is not OperationCanceledException)
            {
                throw new InvalidDataException($"{modelPath} is not a SentencePiece model Microsoft.ML.Tokenizers can load: {ex.Message}", ex);
            }
        }
        var vocabulary = new Dictionary<string, int>(tokenizer.Vocabulary, StringComparer.Ordinal);
        var special = new HashSet<int> { tokenizer.BeginningOfSentenceId, tokenizer.EndOfSentenceId, tokenizer.UnknownId };
        var resolved = settings with
        {
            AddBos = settings.AddBos ?? true,
            BosToken = settings.BosToken ?? tokenizer.BeginningOfSentenceToken,
            EosToken = settings.EosToken ?? tokenizer.EndOfSentenceToken,
        };
        var ids = resolved.Resolve(vocabulary);
        return new MlTokenizerAdapter(tokenizer, special, vocabulary.Values.Max() + 1, ids, addPrefixSpace: false, "sentencepiece");
    }

    private static bool IsByteLevel(JsonObject root) =>
        HasType(root["pre_tokenizer"], "ByteLevel", "pretokenizers") || HasType(root["decoder"], "ByteLevel", "decoders");

    private static bool HasType(JsonNode? node, string type, string listKey) => node is JsonObject obj &&
        (obj["type"]?.GetValue<string>() == type ||
         (obj[listKey] is JsonArray list && list.Any(inner => HasType(inner, type, listKey))));

    private static string? SplitPattern(JsonNode? node)
    {
        if (node is not JsonObject obj)
        {
            return null;
        }
        if (obj["type"]?.GetValue<string>() == "Split")
        {
            return obj["pattern"]?["Regex"]?.GetValue<string>();
        }
        return obj["pretokenizers"] is JsonArray list ? list.Select(SplitPattern).FirstOrDefault(p => p is not null) : null;
    }

    private static bool FindAddPrefixSpace(JsonNode? node)
    {
        if (node is not JsonObject obj)
        {
            return false;
        }
        if (obj["type"]?.GetValue<string>() == "ByteLevel")
        {
            return obj["add_prefix_space"]?.GetValue<bool>() ?? false;
        }
        return obj["pretokenizers"] is JsonArray list && list.Any(FindAddPrefixSpace);
    }
}
