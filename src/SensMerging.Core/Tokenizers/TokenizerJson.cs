using System.Text.Json;
using System.Text.Json.Nodes;
using SensMerging.Core.Engine;

namespace SensMerging.Core.Tokenizers;

/// <summary>
/// A Hugging Face <c>tokenizer.json</c> (the <c>tokenizers</c> library's format) as far as a vocabulary merge needs it:
/// the model's vocabulary (BPE, WordLevel and WordPiece as a token-to-id map, Unigram as a list whose index is the id),
/// the added tokens with their flags, adding tokens with the library's id rule, removing tokens above a size (BPE), and
/// writing the file back with every other part kept as it was.
/// </summary>
internal sealed class TokenizerJson
{
    /// <summary>The file name.</summary>
    public const string FileName = "tokenizer.json";

    private readonly JsonObject _root;
    private readonly Dictionary<string, int> _modelVocab;
    private readonly List<(int Id, string Content, JsonObject Node)> _added;

    private TokenizerJson(string path, JsonObject root, string modelType, Dictionary<string, int> modelVocab, List<(int, string, JsonObject)> added)
    {
        FilePath = path;
        _root = root;
        ModelType = modelType;
        _modelVocab = modelVocab;
        _added = added;
    }

    /// <summary>Where it was read from.</summary>
    public string FilePath { get; }

    /// <summary>The model's type (<c>BPE</c>, <c>Unigram</c>, <c>WordLevel</c>, <c>WordPiece</c>).</summary>
    public string ModelType { get; }

    /// <summary>The added tokens in id order: id, text and their entry (flags).</summary>
    public IReadOnlyList<(int Id, string Content, JsonObject Node)> AddedTokens => [.. _added.OrderBy(a => a.Id)];

    /// <summary>Whether <paramref name="token"/> is an added token.</summary>
    public bool IsAdded(string token) => _added.Any(a => a.Content == token);

    /// <summary>Every token and its id, the added tokens included (what <c>get_vocab()</c> gives).</summary>
    public IReadOnlyDictionary<string, int> Vocabulary()
    {
        var vocab = new Dictionary<string, int>(_modelVocab, StringComparer.Ordinal);
        foreach (var (id, content, _) in _added)
        {
            vocab[content] = id;
        }
        return vocab;
    }

    /// <summary>Reads <c>tokenizer.json</c> from <paramref name="folder"/>, or null when the folder has none.</summary>
    /// <exception cref="MergeValidationException">The file is malformed or its model type is not one a vocabulary merge reads.</exception>
    public static TokenizerJson? TryLoad(string folder)
    {
        var path = Path.Combine(folder, FileName);
        if (!File.Exists(path))
        {
            return null;
        }
        JsonObject root;
        try
        {
            root = JsonNode.Parse(File.ReadAllText(path)) as JsonObject ?? throw new MergeValidationException($"{path}: expected a JSON object");
        }
        catch (JsonException e)
        {
            throw new MergeValidationException($"{path}: malformed JSON ({e.Message})");
        }
        if (root["model"] is not JsonObject model)
        {
            throw new MergeValidationException($"{path}: no 'model' object (is this a Hugging Face tokenizers file?)");
        }
        var type = model["type"]?.GetValue<string>() ?? (model["merges"] is not null ? "BPE" : null)
            ?? throw new MergeValidationException($"{path}: the model has no 'type'");
        var vocab = new Dictionary<string, int>(StringComparer.Ordinal);
        switch (model["vocab"])
        {
            case JsonObject map when type is "BPE" or "WordLevel" or "WordPiece":
                foreach (var (token, id) in map)
                {
                    vocab[token] = Id(path, token, id);
                }
                break;
            case JsonArray list when type == "Unigram":
                for (var i = 0; i < list.Count; i++)
                {
                    var piece = (list[i] as JsonArray)?[0]?.GetValue<string>() ?? throw new MergeValidationException($"{path}: Unigram vocabulary entry {i} is not [piece, score]");
                    vocab.TryAdd(piece, i);
                }
                break;
            default:
                throw new MergeValidationException($"{path}: model type '{type}' with this vocabulary layout is not supported (BPE, WordLevel, WordPiece, Unigram)");
        }
        var added = new List<(int, string, JsonObject)>();
        if (root["added_tokens"] is JsonArray addedTokens)
        {
            foreach (var entry in addedTokens)
            {
                if (entry is not JsonObject token || token["content"]?.GetValue<string>() is not { } content || token["id"] is null)
                {
                    throw new MergeValidationException($"{path}: an 'added_tokens' entry lacks 'id' or 'content'");
                }
                added.Add((Id(path, content, token["id"]), content, (JsonObject)token.DeepClone()));
            }
        }
        else if (root["added_tokens"] is not null)
        {
            throw new MergeValidationException($"{path}: 'added_tokens' must be a list");
        }
        return new TokenizerJson(path, root, type, vocab, added);
    }

    private static int Id(string path, string token, JsonNode? node)
    {
        try
        {
            return node?.GetValue<int>() is { } id and >= 0 ? id : throw new MergeValidationException($"{path}: token '{token}' has a negative id");
        }
        catch (Exception e) when (e is FormatException or InvalidOperationException)
        {
            throw new MergeValidationException($"{path}: token '{token}' has id '{node?.ToJsonString()}', not an integer");
        }
    }

    /// <summary>
    /// A copy without the tokens at ids <paramref name="size"/> and above (mergekit's stripped base tokenizer: tokens a
    /// model's embeddings have no row for), or this one when there are none. Only BPE vocabularies can be cut (their merges
    /// that use a removed token are removed too).
    /// </summary>
    public TokenizerJson Below(int size)
    {
        var vocab = Vocabulary();
        var unused = vocab.Where(v => v.Value >= size).Select(v => v.Key).ToHashSet(StringComparer.Ordinal);
        if (unused.Count == 0)
        {
            return this;
        }
        if (ModelType != "BPE")
        {
            throw new MergeValidationException($"{FilePath}: {unused.Count} token(s) have ids at or above the model's vocab_size {size}, and only a BPE vocabulary can be cut to it (this one is {ModelType})");
        }
        var root = (JsonObject)_root.DeepClone();
        var model = (JsonObject)root["model"]!;
        var modelVocab = (JsonObject)model["vocab"]!;
        foreach (var token in unused)
        {
            modelVocab.Remove(token);
        }
        if (model["merges"] is JsonArray merges)
        {
            var kept = new JsonArray();
            foreach (var merge in merges)
            {
                string[] parts = merge switch
                {
                    JsonArray pair => [.. pair.Select(p => p?.GetValue<string>() ?? string.Empty)],
                    JsonValue text when text.GetValue<string>() is { } s && s.Count(c => c == ' ') == 1 => s.Split(' '),
                    _ => throw new MergeValidationException($"{FilePath}: unexpected merge entry {merge?.ToJsonString()}"),
                };
                if (!parts.Any(unused.Contains))
                {
                    kept.Add(merge!.DeepClone());
                }
            }
            model["merges"] = kept;
        }
        var added = _added.Where(a => a.Id < size).Select(a => (a.Id, a.Content, (JsonObject)a.Node.DeepClone())).ToList();
        root["added_tokens"] = new JsonArray([.. added.Select(a => (JsonNode)a.Item3.DeepClone())]);
        return new TokenizerJson(FilePath, root, ModelType,
            _modelVocab.Where(v => !unused.Contains(v.Key)).ToDictionary(v => v.Key, v => v.Value, StringComparer.Ordinal), added);
    }

    /// <summary>A deep copy (adding tokens to it leaves this one as it is).</summary>
    public TokenizerJson Copy() =>
        new(FilePath, (JsonObject)_root.DeepClone(), ModelType, new Dictionary<string, int>(_modelVocab, StringComparer.Ordinal),
            [.. _added.Select(a => (a.Id, a.Content, (JsonObject)a.Node.DeepClone()))]);

    /// <summary>
    /// Adds a token as the <c>tokenizers</c> library's <c>add_tokens</c> does: a token already in the vocabulary keeps its
    /// id (an added token's entry takes <paramref name="flags"/> when given and different; an ordinary one gets an added-token
    /// entry), a new one gets the next id (the model's vocabulary size, or one past the largest added id when that is already
    /// beyond it). <paramref name="flags"/> null: a plain added token (not special, normalized). Returns the token's id.
    /// </summary>
    public int Add(string content, JsonObject? flags)
    {
        ArgumentException.ThrowIfNullOrEmpty(content);
        var entry = flags is null
            ? new JsonObject { ["content"] = content, ["single_word"] = false, ["lstrip"] = false, ["rstrip"] = false, ["normalized"] = true, ["special"] = false }
            : (JsonObject)flags.DeepClone();
        entry["content"] = content;
        var index = _added.FindIndex(a => a.Content == content);
        if (index >= 0 && flags is null)
        {
            return _added[index].Id; // a plain add of an added token keeps it as it is (a special token stays special)
        }
        int id;
        if (index >= 0)
        {
            id = _added[index].Id;
        }
        else if (_modelVocab.TryGetValue(content, out var inModel))
        {
            id = inModel;
        }
        else
        {
            var max = _added.Count == 0 ? -1 : _added.Max(a => a.Id);
            id = max < 0 ? _modelVocab.Count : max >= _modelVocab.Count ? max + 1 : _modelVocab.Count;
        }
        entry.Remove("id");
        var withId = new JsonObject { ["id"] = id };
        foreach (var (key, value) in entry)
        {
            withId[key] = value?.DeepClone();
        }
        if (index >= 0)
        {
            if (!JsonNode.DeepEquals(Flags(_added[index].Node), Flags(withId)))
            {
                _added[index] = (id, content, withId);
            }
        }
        else
        {
            _added.Add((id, content, withId));
        }
        return id;
    }

    private static JsonObject Flags(JsonObject node)
    {
        var copy = (JsonObject)node.DeepClone();
        copy.Remove("id");
        return copy;
    }

    /// <summary>Writes the tokenizer (its added tokens in id order) to <paramref name="path"/>.</summary>
    public void Save(string path)
    {
        var root = (JsonObject)_root.DeepClone();
        root["added_tokens"] = new JsonArray([.. AddedTokens.Select(a => (JsonNode)a.Node.DeepClone())]);
        File.WriteAllText(path, root.ToJsonString(new JsonSerializerOptions { WriteIndented = true }) + "\n");
    }
}
