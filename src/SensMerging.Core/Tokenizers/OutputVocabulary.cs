using System.Text.Json.Nodes;
using SensMerging.Core.Config;
using SensMerging.Core.Engine;

namespace SensMerging.Core.Tokenizers;

/// <summary>
/// The merged model's vocabulary, built from the inputs' tokenizers as mergekit's <c>tokenizer_source</c> /
/// <c>tokenizer</c> block does: the output tokenizer (the base's with tokens beyond its <c>vocab_size</c> removed, a named
/// model's, or the base's with every other model's tokens added for <c>union</c>; then the <c>tokens</c> entries added),
/// and for every input model the permutation from output token id to its own embedding row (-1 where it lacks the token).
/// <see cref="EmbeddingRows"/> turns these into each model's embedding / lm_head rows token by token. Built once per merge
/// (<see cref="ResolvedInputs"/>).
/// </summary>
public sealed class OutputVocabulary
{
    private readonly TokenizerJson _tokenizer;
    private readonly Dictionary<string, int[]> _permutations;
    private readonly Dictionary<string, IReadOnlyDictionary<string, int>> _originalVocabularies;

    private OutputVocabulary(
        TokenizerJson tokenizer, IReadOnlyDictionary<string, int> tokens, int paddedCount, Dictionary<string, int[]> permutations,
        Dictionary<string, IReadOnlyDictionary<string, int>> originals, IReadOnlyDictionary<string, ResolvedTokenEmbedding> configured, string filesFolder)
    {
        _tokenizer = tokenizer;
        Tokens = tokens;
        PaddedCount = paddedCount;
        _permutations = permutations;
        _originalVocabularies = originals;
        Configured = configured;
        FilesFolder = filesFolder;
        TokensById = [.. tokens.OrderBy(t => t.Value).Select(t => t.Key)];
    }

    /// <summary>The output tokens and their ids (0 to <see cref="Count"/> - 1).</summary>
    public IReadOnlyDictionary<string, int> Tokens { get; }

    /// <summary>The output tokens by id.</summary>
    public IReadOnlyList<string> TokensById { get; }

    /// <summary>How many tokens the output tokenizer has.</summary>
    public int Count => Tokens.Count;

    /// <summary>Embedding rows written: <see cref="Count"/> rounded up to <c>pad_to_multiple_of</c>; the output config's <c>vocab_size</c>.</summary>
    public int PaddedCount { get; }

    /// <summary>The <c>tokens</c> entries, their models named as the merge names its inputs.</summary>
    public IReadOnlyDictionary<string, ResolvedTokenEmbedding> Configured { get; }

    /// <summary>The folder <c>tokenizer_config.json</c>, <c>special_tokens_map.json</c> and <c>tokenizer.model</c> are taken from.</summary>
    public string FilesFolder { get; }

    /// <summary>Output token id to <paramref name="model"/>'s embedding row, -1 where it lacks the token.</summary>
    public IReadOnlyList<int> PermutationOf(string model) =>
        _permutations.TryGetValue(model, out var p) ? p : throw new MergeValidationException($"model '{model}' is not one of the vocabulary's models");

    /// <summary>The id of <paramref name="token"/> in <paramref name="model"/>'s own tokenizer, or null.</summary>
    public int? OriginalId(string model, string token) =>
        _originalVocabularies.TryGetValue(model, out var v) && v.TryGetValue(token, out var id) ? id : null;

    /// <summary>Writes the output tokenizer's <c>tokenizer.json</c>.</summary>
    internal void SaveTokenizer(string path) => _tokenizer.Save(path);

    /// <summary>The output tokenizer's added tokens (id, text, flags), for <c>tokenizer_config.json</c>'s <c>added_tokens_decoder</c>.</summary>
    internal IReadOnlyList<(int Id, string Content, JsonObject Node)> AddedTokens => _tokenizer.AddedTokens;

    /// <summary>
    /// Builds the vocabulary. <paramref name="models"/> are the merge's models in mergekit's referenced order (the base
    /// first), each with the name the merge uses for it, its folder and its config's <c>vocab_size</c>;
    /// <paramref name="baseName"/> is the base (else the first model); <paramref name="nameOf"/> maps a config reference
    /// to that name; <paramref name="sourceFolder"/> is the tokenizer source model's folder (any model, merged or not). A
    /// model without <c>tokenizer.json</c> is taken to have the base's tokenizer (mergekit's fallback).
    /// </summary>
    /// <exception cref="MergeValidationException">A tokenizer file is missing or malformed, or a setting names what is not there.</exception>
    public static OutputVocabulary Build(
        TokenizerSettings settings, IReadOnlyList<VocabularyModel> models, string? baseName, Func<ModelReference, string?> nameOf, string? sourceFolder)
    {
        ArgumentNullException.ThrowIfNull(settings);
        ArgumentNullException.ThrowIfNull(models);
        ArgumentNullException.ThrowIfNull(nameOf);
        if (models.Count == 0)
        {
            throw new MergeValidationException("the merge has no models to build a vocabulary from");
        }
        var baseModel = models.FirstOrDefault(m => m.Name == baseName) ?? models[0];
        var baseTokenizer = TokenizerJson.TryLoad(baseModel.Folder)
            ?? throw new MergeValidationException(
                $"tokenizer_source needs the base model's tokenizer: '{baseModel.Name}' ({baseModel.Folder}) has no {TokenizerJson.FileName} (a folder with only a sentencepiece tokenizer.model cannot be read here)");
        baseTokenizer = baseTokenizer.Below(baseModel.VocabSize ?? baseTokenizer.Vocabulary().Count);

        var tokenizers = new Dictionary<string, TokenizerJson?>(StringComparer.Ordinal) { [baseModel.Name] = baseTokenizer };
        foreach (var model in models.Where(m => m.Name != baseModel.Name))
        {
            tokenizers.TryAdd(model.Name, TokenizerJson.TryLoad(model.Folder));
        }

        TokenizerJson output;
        var filesFolder = baseModel.Folder;
        switch (settings.Source.Kind)
        {
            case TokenizerSourceKind.Base:
                output = baseTokenizer.Copy();
                break;
            case TokenizerSourceKind.Union:
                output = Union(baseTokenizer, models.Where(m => tokenizers[m.Name] is not null).DistinctBy(m => m.Name).Select(m => (m, tokenizers[m.Name]!)));
                break;
            default:
                var folder = sourceFolder ?? throw new ArgumentException("a model tokenizer source needs its folder", nameof(sourceFolder));
                output = (TokenizerJson.TryLoad(folder)
                    ?? throw new MergeValidationException($"tokenizer source '{settings.Source.Model!.Text}' ({folder}) has no {TokenizerJson.FileName}")).Copy();
                filesFolder = folder;
                break;
        }
        foreach (var token in settings.Tokens.Keys)
        {
            output.Add(token, null);
        }

        var vocab = output.Vocabulary();
        if (vocab.FirstOrDefault(t => t.Value >= vocab.Count) is { Key: not null } hole)
        {
            throw new MergeValidationException(
                $"the output vocabulary has {vocab.Count} tokens but token '{hole.Key}' has id {hole.Value}: its ids are not 0..{vocab.Count - 1}, so embedding rows cannot be built for it");
        }
        var padded = vocab.Count;
        if (settings.PadToMultipleOf is { } multiple && padded % multiple != 0)
        {
            padded = ((padded / multiple) + 1) * multiple;
        }

        var permutations = new Dictionary<string, int[]>(StringComparer.Ordinal);
        var originals = new Dictionary<string, IReadOnlyDictionary<string, int>>(StringComparer.Ordinal);
        foreach (var model in models.DistinctBy(m => m.Name))
        {
            var own = (tokenizers[model.Name] ?? baseTokenizer).Vocabulary();
            originals[model.Name] = own;
            var size = model.VocabSize ?? own.Count;
            var p = new int[vocab.Count];
            foreach (var (token, id) in vocab)
            {
                // A token at or above the model's vocab_size has no embedding row (padding): the model lacks it.
                p[id] = own.TryGetValue(token, out var old) && old < size ? old : -1;
            }
            permutations[model.Name] = p;
        }

        var configured = new Dictionary<string, ResolvedTokenEmbedding>(StringComparer.Ordinal);
        foreach (var (token, entry) in settings.Tokens)
        {
            string? sourceModel = null;
            if (entry.Source?.Model is { } reference)
            {
                sourceModel = nameOf(reference) ?? throw new MergeValidationException($"token '{token}': its source model '{reference.Text}' is not one of the merge's models");
            }
            configured[token] = new ResolvedTokenEmbedding(entry.Source?.Kind, sourceModel, entry.Source?.Token, entry.Source?.TokenId, entry.Force);
        }
        return new OutputVocabulary(output, vocab, padded, permutations, originals, configured, filesFolder);
    }

    /// <summary>
    /// mergekit's union: every model's ordinary tokens (below its vocab_size, in id order, models in order) and added
    /// tokens (the first model's flags win) added to a copy of the base tokenizer: ordinary tokens the base lacks first,
    /// then the added tokens.
    /// </summary>
    private static TokenizerJson Union(TokenizerJson baseTokenizer, IEnumerable<(VocabularyModel Model, TokenizerJson Tokenizer)> models)
    {
        var ordinary = new List<string>();
        var seen = new HashSet<string>(StringComparer.Ordinal);
        var added = new List<(string Content, JsonObject Flags)>();
        var addedSeen = new HashSet<string>(StringComparer.Ordinal);
        foreach (var (model, tokenizer) in models)
        {
            var vocab = tokenizer.Vocabulary();
            var size = model.VocabSize ?? vocab.Count;
            foreach (var (token, id) in vocab.OrderBy(v => v.Value))
            {
                if (id < size && !tokenizer.IsAdded(token) && seen.Add(token))
                {
                    ordinary.Add(token);
                }
            }
            foreach (var (id, content, node) in tokenizer.AddedTokens)
            {
                if (id < size && addedSeen.Add(content))
                {
                    added.Add((content, node));
                }
            }
        }
        var result = baseTokenizer.Copy();
        var baseVocab = baseTokenizer.Vocabulary();
        foreach (var token in ordinary.Where(t => !addedSeen.Contains(t) && !baseVocab.ContainsKey(t)))
        {
            result.Add(token, null);
        }
        foreach (var (content, flags) in added)
        {
            result.Add(content, flags);
        }
        return result;
    }
}

/// <summary>One model of a vocabulary merge: its name in the merge, its folder, and its config's <c>vocab_size</c> (null when absent).</summary>
public sealed record VocabularyModel(string Name, string Folder, int? VocabSize);

/// <summary>A <c>tokens</c> entry with its model named as the merge names it.</summary>
/// <param name="Kind">The source's kind; null when the entry gives no source.</param>
/// <param name="Model">The source model's name (for <see cref="TokenEmbeddingKind.Model"/> and <see cref="TokenEmbeddingKind.ModelToken"/>).</param>
/// <param name="Token">The other token's text (model_token by text).</param>
/// <param name="TokenId">The other token's id in the model's own tokenizer (model_token by id).</param>
/// <param name="Force">Use the source for every model, even those with the token.</param>
public sealed record ResolvedTokenEmbedding(TokenEmbeddingKind? Kind, string? Model, string? Token, long? TokenId, bool Force);
