using System.Text.Json;
using System.Text.Json.Nodes;
using System.Text.RegularExpressions;

namespace SensMerging.Runtime.Tokenization;

/// <summary>
/// A Hugging Face <c>WordLevel</c> tokenizer (vocab + unk token) with a Split/Whitespace pre-tokenizer. The project's
/// test models use its character-level form (<see cref="CreateCharacterLevel"/>): every printable ASCII character and
/// newline is one token, split by the regex <c>[\s\S]</c>, decoded with the <c>Fuse</c> decoder.
/// </summary>
public sealed class WordLevelTokenizer : TextTokenizerBase
{
    /// <summary>Special tokens of the character-level vocabulary, ids 0..3 in this order.</summary>
    public const string PadToken = "<pad>";
    public const string BosToken = "<s>";
    public const string EosToken = "</s>";
    public const string UnknownToken = "<unk>";

    /// <summary>The pre-tokenizer regex of the character-level form: each character is one piece.</summary>
    public const string CharacterPattern = @"[\s\S]";

    private readonly Dictionary<string, int> _vocabulary;
    private readonly string[] _tokens;
    private readonly HashSet<int> _special;
    private readonly IReadOnlyList<PreTokenizerStep> _preTokenizer;
    private readonly bool _fuseOnDecode;
    private readonly int _unknownId;

    private WordLevelTokenizer(
        Dictionary<string, int> vocabulary,
        HashSet<int> special,
        IReadOnlyList<PreTokenizerStep> preTokenizer,
        bool fuseOnDecode,
        string unknownToken,
        int bosId,
        int eosId,
        int padId)
    {
        _vocabulary = vocabulary;
        _special = special;
        _preTokenizer = preTokenizer;
        _fuseOnDecode = fuseOnDecode;
        _unknownId = vocabulary.TryGetValue(unknownToken, out var unk) ? unk : -1;
        UnknownTokenText = unknownToken;
        BosTokenId = bosId;
        EosTokenId = eosId;
        PadTokenId = padId;
        var size = vocabulary.Count == 0 ? 0 : vocabulary.Values.Max() + 1;
        _tokens = new string[size];
        foreach (var (token, id) in vocabulary)
        {
            _tokens[id] = token;
        }
    }

    public override int BosTokenId { get; }

    public override int EosTokenId { get; }

    public override int PadTokenId { get; }

    public override int VocabularySize => _tokens.Length;

    public string UnknownTokenText { get; }

    /// <summary>Id of a token (special or not), or -1.</summary>
    public int TokenToId(string token) => _vocabulary.TryGetValue(token, out var id) ? id : -1;

    /// <summary>
    /// The character-level vocabulary: <c>&lt;pad&gt;</c>=0, <c>&lt;s&gt;</c>=1, <c>&lt;/s&gt;</c>=2, <c>&lt;unk&gt;</c>=3,
    /// printable ASCII 0x20..0x7E = 4..98, newline = 99 (100 ids). BOS is prepended, EOS ends responses.
    /// </summary>
    public static WordLevelTokenizer CreateCharacterLevel()
    {
        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal)
        {
            [PadToken] = 0,
            [BosToken] = 1,
            [EosToken] = 2,
            [UnknownToken] = 3,
        };
        for (var c = 0x20; c <= 0x7E; c++)
        {
            vocabulary[((char)c).ToString()] = vocabulary.Count;
        }
        vocabulary["\n"] = vocabulary.Count;
        return new WordLevelTokenizer(
            vocabulary,
            [0, 1, 2, 3],
            [PreTokenizerStep.Split(CharacterPattern, removeMatches: false)],
            fuseOnDecode: true,
            UnknownToken,
            bosId: 1,
            eosId: 2,
            padId: 0);
    }

    public override IReadOnlyList<int> EncodeText(string text)
    {
        ArgumentNullException.ThrowIfNull(text);
        var ids = new List<int>(text.Length);
        foreach (var piece in PreTokenize(text))
        {
            if (_vocabulary.TryGetValue(piece, out var id))
            {
                ids.Add(id);
            }
            else if (_unknownId >= 0)
            {
                ids.Add(_unknownId);
            }
            else
            {
                throw new InvalidOperationException($"Token '{piece}' is not in the vocabulary and the tokenizer has no unk_token.");
            }
        }
        return ids;
    }

    public override string Decode(IEnumerable<int> ids)
    {
        ArgumentNullException.ThrowIfNull(ids);
        var pieces = ids.Where(id => !_special.Contains(id) && id >= 0 && id < _tokens.Length && _tokens[id] is not null)
            .Select(id => _tokens[id]);
        return string.Join(_fuseOnDecode ? string.Empty : " ", pieces);
    }

    /// <summary>
    /// Writes <c>tokenizer.json</c> (loadable by Hugging Face <c>tokenizers</c>) and <c>tokenizer_config.json</c>.
    /// </summary>
    public void Save(string directory)
    {
        ArgumentNullException.ThrowIfNull(directory);
        Directory.CreateDirectory(directory);
        var options = new JsonSerializerOptions { WriteIndented = true };
        File.WriteAllText(Path.Combine(directory, "tokenizer.json"), ToTokenizerJson().ToJsonString(options));
        var config = new JsonObject
        {
            ["tokenizer_class"] = "PreTrainedTokenizerFast",
            ["add_bos_token"] = BosTokenId >= 0,
            ["add_eos_token"] = false,
            ["model_max_length"] = 4096,
        };
        AddTokenName(config, "bos_token", BosTokenId);
        AddTokenName(config, "eos_token", EosTokenId);
        AddTokenName(config, "pad_token", PadTokenId);
        AddTokenName(config, "unk_token", _unknownId);
        File.WriteAllText(Path.Combine(directory, "tokenizer_config.json"), config.ToJsonString(options));
    }

    /// <summary>The tokenizer.json document of this tokenizer.</summary>
    public JsonObject ToTokenizerJson()
    {
        var added = new JsonArray();
        foreach (var id in _special.Order())
        {
            added.Add(new JsonObject
            {
                ["id"] = id,
                ["content"] = _tokens[id],
                ["single_word"] = false,
                ["lstrip"] = false,
                ["rstrip"] = false,
                ["normalized"] = false,
                ["special"] = true,
            });
        }
        var vocab = new JsonObject();
        for (var id = 0; id < _tokens.Length; id++)
        {
            if (_tokens[id] is { } token)
            {
                vocab[token] = id;
            }
        }
        JsonNode? preTokenizer = _preTokenizer.Count switch
        {
            0 => null,
            1 => _preTokenizer[0].ToJson(),
            _ => new JsonObject { ["type"] = "Sequence", ["pretokenizers"] = new JsonArray(_preTokenizer.Select(s => (JsonNode)s.ToJson()).ToArray()) },
        };
        JsonNode? postProcessor = null;
        if (BosTokenId >= 0)
        {
            var bos = _tokens[BosTokenId];
            postProcessor = new JsonObject
            {
                ["type"] = "TemplateProcessing",
                ["single"] = new JsonArray(SpecialPiece(bos), SequencePiece("A")),
                ["pair"] = new JsonArray(SpecialPiece(bos), SequencePiece("A"), SpecialPiece(bos), SequencePiece("B")),
                ["special_tokens"] = new JsonObject
                {
                    [bos] = new JsonObject { ["id"] = bos, ["ids"] = new JsonArray(BosTokenId), ["tokens"] = new JsonArray(bos) },
                },
            };
        }
        return new JsonObject
        {
            ["version"] = "1.0",
            ["truncation"] = null,
            ["padding"] = null,
            ["added_tokens"] = added,
            ["normalizer"] = null,
            ["pre_tokenizer"] = preTokenizer,
            ["post_processor"] = postProcessor,
            ["decoder"] = _fuseOnDecode ? new JsonObject { ["type"] = "Fuse" } : null,
            ["model"] = new JsonObject
            {
                ["type"] = "WordLevel",
                ["vocab"] = vocab,
                ["unk_token"] = UnknownTokenText,
            },
        };
    }

    /// <summary>Builds the tokenizer from a parsed tokenizer.json whose model type is WordLevel.</summary>
    internal static WordLevelTokenizer FromJson(JsonObject root, string path, SpecialTokenSettings special)
    {
        var model = root["model"] as JsonObject ?? throw new InvalidDataException($"{path} has no model object.");
        if (model["vocab"] is not JsonObject vocabNode)
        {
            throw new InvalidDataException($"{path}: WordLevel model has no vocab object.");
        }
        var vocabulary = new Dictionary<string, int>(StringComparer.Ordinal);
        foreach (var (token, id) in vocabNode)
        {
            vocabulary[token] = id?.GetValue<int>() ?? throw new InvalidDataException($"{path}: vocab entry '{token}' has no id.");
        }
        var specialIds = new HashSet<int>();
        foreach (var (content, id, isSpecial) in HuggingFaceTokenizerJson.AddedTokens(root))
        {
            vocabulary[content] = id;
            if (isSpecial)
            {
                specialIds.Add(id);
            }
        }
        var unknown = model["unk_token"]?.GetValue<string>() ?? UnknownToken;
        var steps = ParsePreTokenizer(root["pre_tokenizer"], path);
        var fuse = DecoderFuses(root["decoder"]);
        var ids = special.Resolve(vocabulary);
        return new WordLevelTokenizer(vocabulary, specialIds, steps, fuse, unknown, ids.Bos, ids.Eos, ids.Pad);
    }

    private static bool DecoderFuses(JsonNode? decoder) => decoder switch
    {
        JsonObject obj when obj["type"]?.GetValue<string>() == "Fuse" => true,
        JsonObject obj when obj["type"]?.GetValue<string>() == "Sequence" && obj["decoders"] is JsonArray list =>
            list.Any(DecoderFuses),
        _ => false,
    };

    private static List<PreTokenizerStep> ParsePreTokenizer(JsonNode? node, string path)
    {
        var steps = new List<PreTokenizerStep>();
        if (node is not JsonObject obj)
        {
            return steps;
        }
        var type = obj["type"]?.GetValue<string>();
        switch (type)
        {
            case "Sequence":
                foreach (var inner in obj["pretokenizers"]?.AsArray() ?? [])
                {
                    steps.AddRange(ParsePreTokenizer(inner, path));
                }
                break;
            case "Whitespace":
                steps.Add(new PreTokenizerStep(new Regex(@"\w+|[^\w\s]+", RegexOptions.CultureInvariant), RemoveMatches: false, (JsonObject)obj.DeepClone(), KeepGaps: false));
                break;
            case "WhitespaceSplit":
                steps.Add(new PreTokenizerStep(new Regex(@"\s+", RegexOptions.CultureInvariant), RemoveMatches: true, (JsonObject)obj.DeepClone()));
                break;
            case "Split":
                var pattern = obj["pattern"] as JsonObject ?? throw new InvalidDataException($"{path}: Split pre-tokenizer has no pattern.");
                var regex = pattern["Regex"]?.GetValue<string>() is { } expression
                    ? new Regex(expression, RegexOptions.CultureInvariant)
                    : new Regex(Regex.Escape(pattern["String"]?.GetValue<string>() ?? throw new InvalidDataException($"{path}: Split pattern has neither Regex nor String.")), RegexOptions.CultureInvariant);
                if (obj["invert"]?.GetValue<bool>() == true)
                {
                    throw new InvalidDataException($"{path}: Split pre-tokenizer with invert=true is not supported.");
                }
                var behavior = obj["behavior"]?.GetValue<string>() ?? "Isolated";
                steps.Add(behavior switch
                {
                    "Isolated" => new PreTokenizerStep(regex, RemoveMatches: false, (JsonObject)obj.DeepClone()),
                    "Removed" => new PreTokenizerStep(regex, RemoveMatches: true, (JsonObject)obj.DeepClone()),
                    _ => throw new InvalidDataException($"{path}: Split behavior '{behavior}' is not supported (Isolated, Removed)."),
                });
                break;
            default:
                throw new InvalidDataException($"{path}: pre_tokenizer type '{type}' is not supported for WordLevel models (Split, Whitespace, WhitespaceSplit, Sequence).");
        }
        return steps;
    }

    private IEnumerable<string> PreTokenize(string text)
    {
        IEnumerable<string> pieces = [text];
        foreach (var step in _preTokenizer)
        {
            pieces = pieces.SelectMany(step.Split).ToList();
        }
        return pieces.Where(p => p.Length > 0);
    }

    private static JsonObject SpecialPiece(string token) =>
        new() { ["SpecialToken"] = new JsonObject { ["id"] = token, ["type_id"] = 0 } };

    private static JsonObject SequencePiece(string id) =>
        new() { ["Sequence"] = new JsonObject { ["id"] = id, ["type_id"] = 0 } };

    private void AddTokenName(JsonObject config, string key, int id)
    {
        if (id >= 0 && id < _tokens.Length && _tokens[id] is { } token)
        {
            config[key] = token;
        }
    }

    /// <summary>One pre-tokenizer split: matches become pieces (or are dropped); text between matches is kept when <paramref name="KeepGaps"/>.</summary>
    private sealed record PreTokenizerStep(Regex Pattern, bool RemoveMatches, JsonObject Source, bool KeepGaps = true)
    {
        public static PreTokenizerStep Split(string regex, bool removeMatches) => new(
            new Regex(regex, RegexOptions.CultureInvariant),
            removeMatches,
            new JsonObject
            {
                ["type"] = "Split",
                ["pattern"] = new JsonObject { ["Regex"] = regex },
                ["behavior"] = removeMatches ? "Removed" : "Isolated",
                ["invert"] = false,
            });

        public IEnumerable<string> Split(string text)
        {
            var pieces = new List<string>();
            var last = 0;
            foreach (Match match in Pattern.Matches(text))
            {
                if (KeepGaps && match.Index > last)
                {
                    pieces.Add(text[last..match.Index]);
                }
                if (!RemoveMatches && match.Length > 0)
                {
                    pieces.Add(match.Value);
                }
                last = match.Index + match.Length;
            }
            if (KeepGaps && last < text.Length)
            {
                pieces.Add(text[last..]);
            }
            return pieces;
        }

        public JsonObject ToJson() => (JsonObject)Source.DeepClone();
    }
}

/// <summary>The BOS/EOS/PAD choices read from tokenizer_config.json, config.json and tokenizer.json.</summary>
internal sealed record SpecialTokenSettings(bool? AddBos, string? BosToken, string? EosToken, string? PadToken, int? ConfigBosId, int? ConfigEosId, int? ConfigPadId, string? TemplateBosToken)
{
    public (int Bos, int Eos, int Pad) Resolve(IReadOnlyDictionary<string, int> vocabulary)
    {
        int Lookup(string? token) => token is not null && vocabulary.TryGetValue(token, out var id) ? id : -1;
        var bosCandidate = Lookup(BosToken);
        if (bosCandidate < 0)
        {
            bosCandidate = ConfigBosId ?? Lookup(TemplateBosToken);
        }
        var addBos = AddBos ?? TemplateBosToken is not null;
        var bos = addBos ? bosCandidate : -1;
        var eos = Lookup(EosToken);
        if (eos < 0)
        {
            eos = ConfigEosId ?? Lookup("</s>");
        }
        var pad = Lookup(PadToken);
        if (pad < 0)
        {
            pad = ConfigPadId ?? (eos >= 0 ? eos : 0);
        }
        return (bos, eos, pad);
    }
}

/// <summary>Helpers for tokenizer.json documents.</summary>
internal static class HuggingFaceTokenizerJson
{
    public static IEnumerable<(string Content, int Id, bool Special)> AddedTokens(JsonObject root)
    {
        if (root["added_tokens"] is not JsonArray added)
        {
            yield break;
        }
        foreach (var node in added)
        {
            if (node?["content"]?.GetValue<string>() is { } content && node["id"] is { } id)
            {
                yield return (content, id.GetValue<int>(), node["special"]?.GetValue<bool>() ?? false);
            }
        }
    }

    /// <summary>The special token a TemplateProcessing post-processor puts before the sequence, if any.</summary>
    public static string? TemplateBosToken(JsonNode? postProcessor)
    {
        if (postProcessor is not JsonObject obj)
        {
            return null;
        }
        var type = obj["type"]?.GetValue<string>();
        if (type == "Sequence" && obj["processors"] is JsonArray processors)
        {
            return processors.Select(TemplateBosToken).FirstOrDefault(t => t is not null);
        }
        if (type != "TemplateProcessing" || obj["single"] is not JsonArray single || single.Count == 0)
        {
            return null;
        }
        return single[0]?["SpecialToken"]?["id"]?.GetValue<string>();
    }

    public static string? TokenName(JsonNode? node) => node switch
    {
        JsonValue value when value.TryGetValue<string>(out var text) => text,
        JsonObject obj => obj["content"]?.GetValue<string>(),
        _ => null,
    };
}
