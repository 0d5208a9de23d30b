"""Phrase lists of the rule labeller: what mentions each condition, and what changes its polarity.

Written for saerad from radiology reporting language (CheXpert-style conventions; not copied from
any labeller). Text is matched lower-cased with single spaces. Every pattern is a regular
expression matched at word boundaries.

Mention kinds
-------------
``finding``   a finding that is present unless negated or hedged ("cardiomegaly", "effusion").
``hedged``    a finding that only *suggests* the condition; present -> uncertain ("vascular
              congestion" -> Edema -1, "blunting of the costophrenic angle" -> Effusion -1).
``anatomy``   a structure that needs a descriptor to say anything ("heart size", "mediastinum"):
              the nearest descriptor in its clause decides (normal -> 0, enlarged -> 1,
              borderline/stable -> -1, none -> no label).
``negative``  a phrase that itself states absence ("lungs are clear" -> Lung Opacity 0).
``other``     an abnormality outside the 14 conditions; it only blocks No Finding ("emphysema").
``ignore``    an unmention: text that looks like a mention but is not one ("pericardial effusion",
              "pleural line"); it is consumed so no other rule can match inside it.

At one position the first listed rule wins, so specific phrases and unmentions come first.

Trigger kinds (scope rules, see :mod:`saerad.radtext.labeler`)
---------------------------------------------------------------
``preneg_unc`` / ``postneg_unc``  uncertainty phrased with a negation ("cannot exclude X",
              "X is not excluded", "no new X"); checked before negation.
``preneg`` / ``postneg``          negation before / after the mention ("no X", "X has resolved").
``preunc`` / ``postunc``          uncertainty before / after the mention ("possible X", "X?").
``pseudo``    looks like a trigger but is not one ("no change in", "near complete resolution of").
``term``      ends every scope (";", "but", "however", ", with", "and there").
"""

from __future__ import annotations

from dataclasses import dataclass

# ---------------------------------------------------------------------------------------------
# Mentions
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class MentionRule:
    pattern: str
    conditions: tuple[str, ...]
    kind: str  # finding | hedged | anatomy | negative | other | ignore
    # Conditions that get an uncertain label whenever this mention is not negated (the CHF rule:
    # heart failure suggests cardiomegaly but does not state it).
    implies_uncertain: tuple[str, ...] = ()


ECM = "Enlarged Cardiomediastinum"
CARDIO = "Cardiomegaly"
OPACITY = "Lung Opacity"
LESION = "Lung Lesion"
EDEMA = "Edema"
CONSOL = "Consolidation"
PNA = "Pneumonia"
ATEL = "Atelectasis"
PTX = "Pneumothorax"
EFF = "Pleural Effusion"
PLEURAL = "Pleural Other"
FX = "Fracture"
DEVICE = "Support Devices"

_SIDE = r"(?:(?:left|right|bilateral|both|bibasilar|basilar|apical|small|large|moderate|mild|trace|tiny)[- ]?(?:sided )?)"
_PLURAL_OPACITY = r"opaci(?:ty|ties|fication|fications|fied)"


def _r(pattern: str, *conditions: str, kind: str = "finding", implies: tuple[str, ...] = ()) -> MentionRule:
    return MentionRule(pattern, tuple(conditions), kind, implies)


MENTION_RULES: tuple[MentionRule, ...] = (
    # --- unmentions: look-alikes that belong to no condition (or to "other") ----------------
    _r(r"pericardial effusions?|joint effusions?|(?:knee|shoulder|elbow) effusions?", kind="other"),
    _r(r"(?:visceral |pleural )?pleural line|pleural margins?", kind="ignore"),
    _r(r"kerley (?:b )?lines?|septal lines?", EDEMA),
    _r(r"(?:mass|volume) effect|soft tissue (?:mass|density|densities|opacity|opacities)", kind="ignore"),
    _r(r"breast (?:shadows?|tissue|densit(?:y|ies)|implants?|prosthes[ie]s)|nipple (?:shadows?|markers?)", kind="ignore"),
    _r(r"bone densit(?:y|ies)|(?:sclerotic|lytic|bony|osseous|blastic|expansile) (?:lesions?|densit(?:y|ies)|foci)", kind="other"),
    _r(r"vertebral (?:body )?(?:collapse|height loss)|compression deformit(?:y|ies)|wedge deformit(?:y|ies)", kind="other"),
    _r(r"(?:aortic|mitral) valve calcifications?|valvular calcifications?", kind="other"),
    _r(r"midline (?:catheters?|lines?)", DEVICE),
    _r(r"(?:trachea|mediastinum) (?:is |remains )?midline", kind="ignore"),
    _r(r"(?:mediastinal|hilar|paratracheal)(?: and (?:right |left |bilateral )?hilar)? (?:lymph nodes?|lymph xxxx|lymph|lymphadenopathy|adenopathy|nodes?|granulomas?)", kind="other"),
    _r(r"mediastinal (?:clips|drains?|drainage tubes?)", DEVICE),
    _r(r"heart failure|chf|congestive (?:heart )?failure|cardiac (?:failure|decompensation)", EDEMA, kind="hedged", implies=(CARDIO,)),
    _r(r"fluid overload|volume overload", EDEMA, kind="hedged"),
    _r(r"heart (?:rate|rhythm|valves?)", kind="ignore"),
    _r(r"soft tissue (?:edema|swelling)|(?:prior |old |remote |healed )?granulomatous (?:infection|disease|process)", kind="other"),
    _r(r"mass[- ]?like|plate[- ]?like", kind="ignore"),
    _r(r"(?:fractured|broken|disrupted) (?:median )?(?:sternal |sternotomy )?wires?", DEVICE),
    # --- negative phrases ----------------------------------------------------------------------
    _r(r"(?:lungs?|lung fields|lung parenchyma|lung bases)(?: are| is| appear| appears| remain| remains)?"
       r"(?: otherwise)?(?: grossly)?(?: well[- ]expanded and| well[- ]aerated and| hyperinflated and| hyperexpanded and)?"
       r" clear", OPACITY, kind="negative"),
    _r(r"clear lungs?|(?:well[- ]expanded|well[- ]aerated|hyperinflated|hyperexpanded) and clear lungs", OPACITY, kind="negative"),
    _r(r"(?:pleural spaces?|costophrenic (?:angles?|sulci|recesses)) (?:are |is |appear |remain )?(?:clear|sharp|normal|unremarkable|preserved|well[- ]defined)",
       EFF, kind="negative"),
    _r(r"sharp costophrenic (?:angles?|sulci)", EFF, kind="negative"),
    # --- Enlarged Cardiomediastinum -------------------------------------------------------------
    _r(r"(?:mediastinal|cardiomediastinal) (?:widening|enlargement)|widen(?:ed|ing) (?:of the )?(?:superior )?(?:cardio)?mediastinum"
       r"|enlarged (?:cardio)?mediastinum|enlargement of the (?:cardio)?mediastin(?:um|al silhouette)", ECM),
    _r(r"cardiac and mediastinal (?:contours?|silhouettes?|shadows?)|heart and mediastinum|heart,? (?:and )?mediastinal (?:contours?|silhouettes?)"
       r"|heart size and mediastinal (?:contours?|silhouettes?|width)|cardiac and mediastinal",
       ECM, CARDIO, kind="anatomy"),
    _r(r"cardio[- ]?mediastinal(?: (?:silhouettes?|contours?|shadows?|structures|size|borders?|width))?"
       r"|mediastin(?:um|al)(?: (?:silhouettes?|contours?|shadows?|structures|width|configuration))?"
       r"|superior mediastinum|mediastinal and hilar (?:contours?|silhouettes?)", ECM, kind="anatomy"),
    # --- Cardiomegaly ---------------------------------------------------------------------------
    _r(r"cardiomegaly|cardiac enlargement|enlargement of the (?:heart|cardiac (?:silhouette|shadow|contours?))"
       r"|enlarged (?:heart|cardiac (?:silhouette|shadow|contours?|size))|(?:biventricular|ventricular|left ventricular|atrial) enlargement",
       CARDIO),
    _r(r"heart size|size of the heart|cardiac (?:size|silhouette|shadow|contours?|dimensions?)|heart shadow|heart", CARDIO, kind="anatomy"),
    # --- Lung Lesion (before opacity: "nodular opacity" is a lesion) ---------------------------
    _r(r"nodul(?:e|es|ar (?:opacit(?:y|ies)|densit(?:y|ies)|lesions?|foci|focus))|nodular|micronodul(?:e|es|ar)"
       r"|pulmonary (?:mass|masses|lesions?)|lung (?:mass|masses|lesions?)|masses|mass|(?:cavitary|cavitating|spiculated) (?:lesions?|mass|nodules?)"
       r"|cavitation|cavity|tumou?rs?|neoplasms?|neoplastic|malignan(?:cy|cies|t)|carcinoma|cancer|metasta(?:sis|ses|tic)|lesions?",
       LESION),
    # --- Pleural Other (before opacity/effusion: "pleural scarring" is not a lung opacity) ------
    _r(r"(?:pleural|pleuro[- ]?parenchymal|pleural[- ]parenchymal|apical pleural) (?:thickening|plaques?|scar(?:s|ring)?|calcifications?|reaction|fibrosis|opacit(?:y|ies)|densit(?:y|ies))"
       r"|pleural[- ]based (?:opacit(?:y|ies)|densit(?:y|ies)|nodules?|masses|mass|lesions?)|calcified pleural plaques?"
       r"|(?:biapical|apical) (?:pleural )?(?:caps?|capping|thickening)|fibrothorax|mesothelioma|pleural abnormalit(?:y|ies)|pleural disease",
       PLEURAL),
    # --- Pneumothorax ---------------------------------------------------------------------------
    _r(r"hydropneumothora(?:x|ces)", PTX, EFF),
    _r(r"pneumothora(?:x|ces)|ptx", PTX),
    # --- Pleural Effusion -----------------------------------------------------------------------
    _r(r"(?:blunting|blunted|blunt) (?:of )?(?:the )?(?:(?:left|right|bilateral|posterior) )?(?:costophrenic|cp) (?:angles?|sulc(?:us|i)|recess(?:es)?)"
       r"|(?:costophrenic|cp) (?:angles?|sulc(?:us|i)) (?:is |are )?(?:blunted|blunting)", EFF, kind="hedged"),
    _r(r"(?:pleural )?effusions?|pleural fluid|(?:fissural|subpulmonic|layering|loculated) fluid|fluid (?:in|within|tracking along) the (?:\w+ )?(?:fissures?|pleural spaces?)"
       r"|hydrothorax|hemothorax|haemothorax|empyema", EFF),
    # --- Edema ----------------------------------------------------------------------------------
    _r(r"(?:pulmonary |interstitial |alveolar |perihilar )?o?edema|edematous", EDEMA),
    _r(r"(?:pulmonary )?(?:vascular|venous) (?:congestion|engorgement|redistribution|prominence|indistinctness)"
       r"|pulmonary congestion|congestion|cephali[sz]ation|indistinct(?:ness of the)? (?:pulmonary )?vascul(?:ature|arity|ar markings)"
       r"|(?:prominent|engorged) (?:pulmonary )?vascul(?:ature|arity)", EDEMA, kind="hedged"),
    # --- Consolidation --------------------------------------------------------------------------
    _r(r"consolidat(?:ion|ions|ive|ed)|air bronchograms?", CONSOL),
    # --- Pneumonia ------------------------------------------------------------------------------
    _r(r"(?:broncho)?pneumonias?|pneumonic|pneumonitis|infectious (?:process|etiology)|infections?|infectious", PNA),
    # --- Atelectasis ----------------------------------------------------------------------------
    _r(r"atelecta(?:sis|ses|tic)|(?:lobar |lobe |segmental |subsegmental |complete |partial )?collapse(?:d)?", ATEL),
    # --- Lung Opacity ---------------------------------------------------------------------------
    _r(r"(?:air ?space|alveolar) (?:disease|process|opacit(?:y|ies)|opacification|filling)|ground[- ]glass(?: opacit(?:y|ies))?"
       r"|" + _PLURAL_OPACITY + r"|opaque|infiltrat(?:e|es|ion|ive)|haz(?:y|iness)|densit(?:y|ies)"
       r"|(?:parenchymal )?scar(?:s|ring)?|fibrosis|fibrotic (?:changes?|scarring)|reticul(?:ar|onodular) (?:pattern|changes?)",
       OPACITY),
    # --- Fracture -------------------------------------------------------------------------------
    _r(r"fractur(?:e|es|ed)|fx", FX),
    # --- Support Devices ------------------------------------------------------------------------
    _r(r"(?:endotracheal|tracheostomy|trach|nasogastric|orogastric|enteric|feeding|dobhoff|gastrostomy|chest|et|ng|og|ett|ij|chest drainage|pigtail) (?:tubes?|catheters?|drains?)"
       r"|(?:central venous|central|picc|swan[- ]ganz|pulmonary artery|dialysis|hemodialysis|jugular|ij|subclavian|arterial|venous|tunneled|port) (?:lines?|catheters?)"
       r"|picc|ett|endotracheal|tracheostomy|port-?a-?cath|portacath|mediport|(?:chest|infusion|power|chest wall|subcutaneous) port"
       r"|(?:dual|single)[- ]lead|(?:pacemaker|pacer|pacing|icd|aicd|defibrillator|transvenous) (?:leads?|wires?|generator|device)"
       r"|pacemaker|pacer|defibrillator|aicd|icd|loop recorder|(?:cardiac|ecg|ekg|telemetry|monitoring) (?:leads|wires|electrodes|devices?)"
       r"|(?:sternotomy|sternal|epicardial pacing) wires?|(?:prosthetic|mechanical|bioprosthetic|replaced) (?:aortic |mitral )?valves?|valve (?:replacement|prosthesis)"
       r"|(?:aortic |mitral |transcatheter )?valve replacement|tavr|lvad|ventricular assist device|intra-?aortic balloon pump|iabp|impella"
       r"|stents?|(?:surgical |vascular )?clips|(?:orthopedic |spinal |fixation |surgical )?hardware|(?:fixation )?(?:plates?|screws|rods)"
       r"|catheters?|tubes?|lines|drains?|cannula|leads|devices?|coils?|shunt catheter|vp shunt|(?:ventriculoperitoneal|vp) shunt tubing",
       DEVICE),
    # --- other abnormalities: block No Finding, label nothing ------------------------------------
    _r(r"emphysema(?:tous)?|copd|chronic obstructive|hyper[- ]?(?:inflat|expan|aerat|lucen)\w*|bullae|bullous|bulla|blebs?"
       r"|scoliosis|scoliotic|kyphosis|kyphotic|degenerative|spondylo\w*|osteophyt\w*|spurring|arthriti\w*|arthropathy|osteoarthriti\w*"
       r"|granulomas?|granulomatous|calcifi(?:ed|cation|cations)|hernias?|tortuous|tortuosity|ectatic|ectasia|unfold(?:ed|ing)|atherosclero\w*"
       r"|pneumomediastinum|pneumoperitoneum|free (?:intraperitoneal |subdiaphragmatic )?air|bronchiectasis|bronchitis|bronchiolitis"
       r"|(?:peri)?bronchial (?:wall )?thickening|peribronchial cuffing|interstitial (?:markings?|prominence|lung disease|disease|changes?)"
       r"|elevat(?:ed|ion) (?:of the )?(?:left |right )?(?:hemi)?diaphragms?|(?:hemi)?diaphragms? (?:is |are )?elevated|eventration"
       r"|(?:hilar |mediastinal )?(?:lymph)?adenopathy|hilar (?:prominence|enlargement|fullness|masses|mass)|(?:post-?surgical|post-?operative|post-?treatment) changes?"
       r"|sternotomy|thoracotomy|lobectomy|pneumonectomy|cholecystectomy|osteopenia|demineraliz\w*|cysts?|deformit(?:y|ies)|aspiration"
       r"|asthma|airways? disease|bronchospasm|contusion|hematoma|hemorrhage|inflammat\w*|hypertension|thickening|lucenc(?:y|ies)",
       kind="other"),
)

# Descriptors for ``anatomy`` mentions; the nearest one in the clause decides.
ANATOMY_NORMAL = (
    r"(?:within |upper limits? of |upper range of |top |high[- ])?normal(?:ly)?(?: limits)?|top[- ]normal|unremarkable|wnl"
    r"|not (?:enlarged|widened|dilated|increased)|non[- ]?enlarged|no (?:enlargement|widening)|preserved"
)
ANATOMY_ABNORMAL = (
    r"enlarge(?:d|ment)|widen(?:ed|ing)|wider|increased|large|larger|prominen(?:t|ce)|dilat(?:ed|ation)|globular|abnormal"
)
ANATOMY_UNCERTAIN = (
    r"borderline|stable|stably|unchanged|similar|grossly unchanged|obscured|poorly (?:seen|evaluated|assessed)|not well (?:seen|evaluated|assessed)"
    r"|(?:difficult|hard|not possible) to (?:assess|evaluate)|(?:cannot|can not) be (?:assessed|evaluated)"
)

# ---------------------------------------------------------------------------------------------
# Triggers
# ---------------------------------------------------------------------------------------------

_VERB_REQUIRED = r"(?:is|are|was|were|has been|have been|has|have|appears?|remains?|has now|have now|is now|are now) "
_VERB = r"(?:" + _VERB_REQUIRED + r")?"
_SEEN = (
    r"(?:seen|identified|visuali[sz]ed|present|appreciated|demonstrated|evident|noted|detected|apparent|visible|observed|shown|"
    r"depicted|found|recognized)"
)

# (kind, pattern) in priority order: at one position the first listed trigger wins.
TRIGGERS: tuple[tuple[str, str], ...] = (
    # pseudo-triggers first: they consume text that would otherwise look like a trigger
    ("pseudo", r"no (?:significant |substantial |appreciable |definite |interval |relevant )*(?:change|changes|increase|decrease|improvement|worsening|progression|difference)"
               r"(?: (?:in|of|from))?|without (?:significant |interval |substantial )*(?:change|increase|decrease|worsening)"
               r"|not (?:significantly |substantially )?(?:changed|increased|decreased|worsened|improved)|not only"
               r"|(?:near(?:ly)?|almost|partial(?:ly)?|incomplete(?:ly)?|not (?:completely|fully|entirely)|(?:slowly )?(?:resolving)) (?:complete )?(?:resolution|resolved|cleared|clearing)"
               r"|no longer (?:enlarged|increasing)|gram[- ]negative|rule of|no (?:previous|prior|comparison)"
               r"|tips? (?:is |are )?not (?:well |clearly )?(?:seen|visuali[sz]ed|identified)"),
    # uncertainty phrased with negation (checked before negation)
    ("preneg_unc", r"(?:cannot|can not|can't|could not|unable to|not able to|difficult to|hard to) (?:entirely |completely |definitely |totally )?(?:exclude|rule out|exclusion of)"
                   r"|no new|no evidence to rule out"),
    ("postneg_unc", r"(?:is |are )?(?:not|cannot|can not|could not|can't) (?:be )?(?:entirely |completely |definitely |totally |confidently )?(?:excluded|ruled out)"
                    r"|(?:is |are )?not (?:clearly|well|definitely|confidently|convincingly) " + _SEEN +
                    r"|(?:is |are )?(?:poorly|incompletely) (?:seen|evaluated|assessed|visuali[sz]ed)"
                    r"|(?:may|might|could|can) (?:also )?(?:be|have been) (?:present|seen|noted|there)"),
    # negation
    ("postneg", _VERB + r"(?:not|no longer) (?:definitely |clearly |well )?" + _SEEN +
                r"|" + _VERB_REQUIRED + r"(?:resolved|cleared|disappeared|gone|removed|excluded|ruled out|absent)"
                r"|(?:resolved|cleared|disappeared|gone|removed|excluded|ruled out|absent)(?= *(?:[.,;]|$))"
                r"|(?:is |are )?negative(?= *(?:[.,;]|$))"),
    ("preneg", r"no (?:definite |convincing |radiographic |x-ray |visible |obvious |acute |other |residual |significant |evidence of )*"
               r"(?:evidence|signs?|findings?|suggestion|features?) (?:of|for|to suggest|to indicate|suggesting|suggestive of)"
               r"|without (?:definite |convincing |radiographic )*(?:evidence|signs?|findings?) (?:of|for)|negative for|free of|clear of|absence of|absent"
               r"|(?:interval )?(?:resolution|removal|clearing) of|(?:interval )?(?:resolved|removed)|rather than|no longer|ruled out|never|neither|nor"
               r"|fails? to (?:show|demonstrate|reveal)|without|not|no"),
    # uncertainty
    ("postunc", r"(?:is |are |was |were )?(?:(?:most |more |less )?(?:likely|probable|possible)|suspected|questioned|favou?red|considered|not excluded)(?= *(?:[.,;]|$))"
                r"|(?:is|are|was|were) (?:also |again )?(?:suspected|questioned|favou?red|considered|possible|probable)"),
    # uncertainty in both directions ("atelectasis versus pneumonia", "pneumonia?")
    ("bothunc", r"\?"),
    ("preunc", r"possib(?:le|ly|ility of)|probab(?:le|ly)|(?:most |more |less )?likely|questionabl[ey]|question of|suspicious (?:for|of)"
               r"|suspicion (?:of|for)|suspect(?:s|ed)?|concern(?:ing)? (?:for|of)|worrisome (?:for|of)"
               r"|(?:may|might|could|would|can) (?:also )?(?:represent|reflect|indicate|be|include|relate|have|suggest)"
               r"|may|might|could|perhaps|maybe|presum(?:ed|ably|ptive)|potential(?:ly)?|equivocal|borderline|differential(?: diagnosis)?(?: includes?)?"
               r"|consider(?:ed|ation of)?|suggest(?:s|ed|ive of|ing|ion of)?|raises? the (?:possibility|question) of"
               r"|correlat(?:e|ion) (?:clinically )?(?:for|with)|clinical correlation (?:for|with)|favou?r(?:s|ed|ing)?|(?:cannot|can not) be characterized"
               r"|exclusion of|exclude|excluding|rule out|ruling out|r/o|evaluat(?:e|ion) for|assess(?:ment)? for"),
    # scope terminators
    ("term", r"[;:]|but|however|although|though|whereas|while|except|aside from|apart from|other than|besides|with the exception of|which|with"
             r"|,\s*with\b|,\s*(?:there|the)\b|and (?:there|the)|otherwise|in addition|additionally"),
)

# Uncertainty triggers that end a negation scope ("no pneumothorax, possible small effusion").
# The "suggest" family does not: "no consolidation to suggest pneumonia" stays negative.
NEG_BREAKING_UNC = (
    r"possib(?:le|ly)|probab(?:le|ly)|(?:most |more |less )?likely|questionabl[ey]|suspicious (?:for|of)|suspect(?:s|ed)?"
    r"|concern(?:ing)? (?:for|of)|worrisome (?:for|of)|may|might|could|perhaps|maybe|presum(?:ed|ably)|equivocal|borderline|favou?r(?:s|ed|ing)?"
)

# Words that mark the start of a new clause for backward (post-trigger) scopes.
CLAUSE_VERB = r"(?:is|are|was|were|has|have|appears?|remains?|demonstrates?|shows?|seen|noted|present)"

# Mentions joined by these are a differential: both uncertain unless negated ("atelectasis or pneumonia").
DIFFERENTIAL_GAP = r"^[\s,]*(?:(?:and/|and |)or|versus|vs\.?|/)\s*(?:(?:possibly|less likely|more likely|likely|an?|early|superimposed|developing|underlying) )*$"

# Statements of normality that name no CheXpert condition ("the lungs are clear", "unremarkable"):
# the report composer lets them lose to an abnormal statement about the same region.
NORMALITY = (
    r"\b(normal|clear|unremarkable|no acute|intact|within normal limits|no (focal|significant|"
    r"definite) (abnormalit\w*|disease|process))\b"
)
# ... and those about the whole study, which lose to any abnormal statement.
GLOBAL_NORMALITY = r"\b(no acute (cardiopulmonary|intrathoracic|chest)|normal (chest|study|radiograph))"
