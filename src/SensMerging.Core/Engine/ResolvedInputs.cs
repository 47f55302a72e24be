using SensMerging.Abstractions;
using SensMerging.Core.Config;
using SensMerging.Core.Models;
using SensMerging.Core.Tokenizers;

namespace SensMerging.Core.Engine;

/// <summary>
/// The inputs of one merge, resolved and opened once: the base (if any) and the experts in the strategy's order, the
/// pinned references they came from, and the facts derived from the reference model (the base, else the first expert):
/// its tensor names, layer count and layer groups, and the tokenizer folder. The merge plan, the parameters' depths, the
/// decorators' context and the registry record all take these from here; nothing downstream derives them again.
/// Owns the opened folders.
/// </summary>
public sealed class ResolvedInputs : IDisposable
{
    private ResolvedInputs(
        IReadOnlyList<ResolvedModel> resolved, MergeInput? baseModel, IReadOnlyList<MergeInput> experts, ModelFolder reference, string tokenizerFolder,
        OutputVocabulary? vocabulary, string? chatTemplate)
    {
        Vocabulary = vocabulary;
        ChatTemplate = chatTemplate;
        Resolved = resolved;
        Base = baseModel;
        Experts = experts;
        TensorNames = [.. reference.Tensors.Select(t => t.Name)];
        LayerCount = reference.LayerCount;
        LayerGroups = Abstractions.LayerGroups.InModelOrder(TensorNames);
        TokenizerFolder = tokenizerFolder;
    }

    /// <summary>Every referenced model as resolved (local folder, pinned commit, LoRA adapter), once each.</summary>
    public IReadOnlyList<ResolvedModel> Resolved { get; }

    /// <summary>The base model, or null when the merge has none.</summary>
    public MergeInput? Base { get; }

    /// <summary>The models merged, in the strategy's order (the base excluded when the strategy takes it apart).</summary>
    public IReadOnlyList<MergeInput> Experts { get; }

    /// <summary>The reference model's tensor names, in its files' order.</summary>
    public IReadOnlyList<string> TensorNames { get; }

    /// <summary>The reference model's transformer blocks (<see cref="ModelFolder.LayerCount"/>).</summary>
    public int LayerCount { get; }

    /// <summary>The reference model's layer groups in model order (<see cref="Abstractions.LayerGroups.InModelOrder"/>).</summary>
    public IReadOnlyList<string> LayerGroups { get; }

    /// <summary>The folder the output's tokenizer files are copied from (when there is no <see cref="Vocabulary"/>).</summary>
    public string TokenizerFolder { get; }

    /// <summary>The output vocabulary built from the tokenizers (the config's <c>tokenizer_source</c> / <c>tokenizer</c>), or null.</summary>
    public OutputVocabulary? Vocabulary { get; }

    /// <summary>The config's <c>chat_template</c> resolved to a template (<see cref="ChatTemplates.Resolve"/>), or null.</summary>
    public string? ChatTemplate { get; }

    /// <summary>
    /// Opens the inputs of <paramref name="config"/> from its resolved references: the base, then the experts in the
    /// strategy's order (<see cref="MergeConfig.Experts"/>), each folder with its LoRA adapter applied. The tokenizer
    /// comes from the config's <c>tokenizer_source</c> model, else from the reference model.
    /// </summary>
    /// <exception cref="MergeValidationException">The config lists no models.</exception>
    public static ResolvedInputs Open(MergeConfig config, bool strategyRequiresBase, IReadOnlyList<ResolvedModel> resolved)
    {
        ArgumentNullException.ThrowIfNull(config);
        ArgumentNullException.ThrowIfNull(resolved);
        ResolvedModel Find(ModelReference r) => resolved.First(m => m.Reference.SameModelAs(r));
        static ModelFolder OpenFolder(ResolvedModel r) => ModelFolder.Open(r.LocalPath, r.Adapter?.LocalPath);

        MergeInput? baseInput = null;
        var experts = new List<MergeInput>();
        try
        {
            if (config.BaseModel is not null)
            {
                baseInput = new MergeInput(config.BaseModel.Text, OpenFolder(Find(config.BaseModel)));
            }
            foreach (var expert in config.Experts(strategyRequiresBase))
            {
                experts.Add(new MergeInput(expert.Model.Text, OpenFolder(Find(expert.Model))));
            }
            var reference = baseInput?.Folder ?? experts.FirstOrDefault()?.Folder
                ?? throw new MergeValidationException("the config lists no models to merge");
            var tokenizer = config.TokenizerSource is { Kind: TokenizerSourceKind.Model, Model: { } m } ? Find(m).LocalPath : reference.Path;
            // mergekit's referenced order: the base first, then the models as listed; each under the name the merge gives it.
            var opened = (baseInput is null ? experts : [baseInput, .. experts]).DistinctBy(i => i.Name).ToList();
            var referenced = config.ReferencedModels();
            string? NameOf(ModelReference r) => referenced.FirstOrDefault(x => x.SameModelAs(r))?.Text is { } text && opened.Any(o => o.Name == text) ? text : null;
            var vocabulary = config.Tokenizer is { } settings
                ? OutputVocabulary.Build(settings, [.. referenced.Select(NameOf).OfType<string>().Distinct().Select(n => opened.First(o => o.Name == n))
                    .Select(o => new VocabularyModel(o.Name, o.Folder.Path, o.Folder.Config?.VocabSize))], baseInput?.Name, NameOf,
                    settings.Source.Model is { } source ? Find(source).LocalPath : null)
                : null;
            var chatTemplate = config.ChatTemplate is { } template ? ChatTemplates.Resolve(template, referenced.Select(r => Find(r).LocalPath)) : null;
            return new ResolvedInputs(resolved, baseInput, experts, reference, tokenizer, vocabulary, chatTemplate);
        }
        catch
        {
            baseInput?.Folder.Dispose();
            experts.ForEach(e => e.Folder.Dispose());
            throw;
        }
    }

    /// <summary>The resolved form of <paramref name="reference"/> (the same model, whatever revision text it was written with).</summary>
    public ResolvedModel ResolvedOf(ModelReference reference)
    {
        ArgumentNullException.ThrowIfNull(reference);
        return Resolved.First(r => r.Reference.SameModelAs(reference));
    }

    /// <summary>True when <paramref name="model"/> is the base model.</summary>
    public bool IsBase(ResolvedModel model)
    {
        ArgumentNullException.ThrowIfNull(model);
        return Base is not null && string.Equals(Base.Name, model.Reference.Text, StringComparison.Ordinal);
    }

    public void Dispose()
    {
        Base?.Folder.Dispose();
        foreach (var e in Experts)
        {
            e.Folder.Dispose();
        }
    }
}
