/**
 * The interface's text, in French (the only language of the service), and
 * date formatting in Europe/Paris.
 */

const STRINGS = {
  sysArchived: "Accompagnement clôturé ({reason}) : la conversation est en lecture seule.",
  sysRestored: "La conversation a été rouverte par un superviseur.",
  sysInactivityNotice: "Sans connexion de votre part, ce compte et ses messages seront supprimés le {date}. Connectez-vous pour le conserver.",
  sysInactivityNoticePeer: "{name} ne s'est pas connecté·e depuis longtemps : sans connexion de sa part, son compte et cette conversation seront supprimés le {date}.",
  sysActivationReissued: "Le conseiller a émis un nouveau code d'activation, valable jusqu'au {date}. L'ancien code ne fonctionne plus.",
  sysPasswordReset: "Le conseiller a émis un code pour choisir un nouveau mot de passe, valable jusqu'au {date}. Si vous ne l'avez pas demandé, parlez-en à votre conseiller.",
  appName: "CEJ Messagerie",
  consoleTitle: "Console conseiller",
  appTitle: "Ma messagerie",
  skipToThread: "Aller à la conversation",
  login: "Identifiant",
  password: "Mot de passe",
  passwordConfirm: "Confirmer le mot de passe",
  passwordHint: "Au moins 10 caractères.",
  passwordsDiffer: "Les deux mots de passe ne sont pas identiques.",
  signIn: "Se connecter",
  signOut: "Se déconnecter",
  signingIn: "Connexion…",
  loginTitle: "Connexion",
  loginFailed: "Identifiant ou mot de passe incorrect.",
  tooManyAttempts: "Trop de tentatives. Réessayez dans quelques minutes.",
  networkError: "Le serveur ne répond pas. Vérifiez votre connexion.",
  genericError: "Une erreur est survenue : {message}",
  sessionExpired: "Votre session a expiré. Reconnectez-vous.",
  activationTitle: "Activer mon compte",
  activationIntro: "Saisissez le code d'activation donné par votre conseiller, puis choisissez un mot de passe.",
  activationCode: "Code d'activation",
  activate: "Activer",
  activationFailed: "Ce code d'activation est inconnu, déjà utilisé ou expiré.",
  haveCode: "J'ai un code d'activation",
  haveAccount: "J'ai déjà un compte",
  online: "En ligne",
  offline: "Hors ligne",
  connecting: "Connexion en cours…",
  reconnecting: "Reconnexion…",
  connectionLabel: "État de la connexion",
  lastSeen: "Vu {when}",
  neverSeen: "Pas encore connecté",
  conversations: "Conversations",
  searchLabel: "Rechercher un bénéficiaire",
  searchPlaceholder: "Nom du bénéficiaire",
  noConversation: "Aucune conversation.",
  noMatch: "Aucun bénéficiaire ne correspond.",
  unreadCount: "{n} non lu(s)",
  flagged: "Prioritaire",
  flag: "Marquer prioritaire",
  unflag: "Retirer la priorité",
  selectConversation: "Choisissez une conversation dans la liste.",
  loadOlder: "Charger les messages précédents",
  loading: "Chargement…",
  messageLabel: "Votre message",
  messagePlaceholder: "Écrire un message…",
  send: "Envoyer",
  typing: "{name} est en train d'écrire…",
  statusPending: "En attente",
  statusSending: "Envoi…",
  statusSent: "Envoyé",
  statusRead: "Lu",
  statusFailed: "Échec de l'envoi",
  retry: "Réessayer",
  discard: "Supprimer",
  you: "Vous",
  messagesOf: "Messages avec {name}",
  unreadableMessage: "Message illisible sur cet appareil (clé manquante).",
  unverifiedMessage: "Message non vérifié : signature invalide ou appareil inconnu.",
  unverifiableMessage: "Message non vérifiable : l'appareil qui l'a envoyé n'appartient pas à son expéditeur.",
  waitingKeys: "Message chiffré : en attente de la clé…",
  legacyFormat: "Ancien format : la date, le type et le statut de ce message ne sont pas protégés par la signature.",
  unknownType: "Message de type « {type} » (non pris en charge par cette version).",
  sysCounsellorChanged: "Changement de conseiller.",
  sysTemporaryCounsellor: "Un conseiller assure temporairement le suivi.",
  sysEpochRotated: "Nouvelles clés de chiffrement pour cette conversation.",
  sysMyDeviceAdded: "Nouvel appareil ajouté à votre compte.",
  sysMyDeviceRemoved: "Un de vos appareils a été retiré.",
  sysPeerDeviceAdded: "{name} utilise un nouvel appareil : vous pouvez vérifier le numéro de sécurité.",
  sysPeerDeviceRemoved: "{name} a retiré un appareil.",
  // System events naming who did what (issue #10, point 7).
  sysCounsellorChangedNamed: "{from} a transmis le suivi à {to}.",
  sysTemporaryCounsellorNamed: "{to} assure le suivi jusqu'au {date}, en remplacement de {from}.",
  sysTakeBack: "{to} reprend le suivi (fin du remplacement par {from}).",
  sysDeviceAddedFor: "Nouvel appareil pour {name}.",
  sysDeviceRemovedFor: "Appareil retiré pour {name}.",
  somebody: "Quelqu'un",
  somebodyRole: "un·e {role}",
  role_counsellor: "conseiller·ère",
  role_supervisor: "responsable de structure",
  role_beneficiary: "bénéficiaire",
  role_admin: "administrateur·rice",
  safetyNumber: "Numéro de sécurité",
  safetyIntro: "Comparez ce numéro avec celui affiché chez {name} (en personne ou par téléphone). S'ils sont identiques, personne ne s'est interposé.",
  close: "Fermer",
  cancel: "Annuler",
  newBeneficiary: "Nouveau bénéficiaire",
  displayName: "Nom et prénom",
  programme: "Dispositif",
  create: "Créer",
  beneficiaryCreated: "Compte créé pour {name}",
  activationCodeIs: "Code d'activation à transmettre",
  activationExpires: "Valable jusqu'au {when}.",
  loginTaken: "Cet identifiant est déjà utilisé.",
  security: "Sécurité",
  deviceSetupTitle: "Configurer cet appareil",
  deviceSetupIntro: "Vos messages sont chiffrés de bout en bout : cet appareil va créer ses propres clés.",
  deviceCreate: "Créer les clés de cet appareil",
  deviceWorking: "Création des clés…",
  restoreTitle: "Restaurer mes clés",
  restoreIntro: "Vous avez déjà utilisé la messagerie sur un autre appareil. Saisissez votre clé de récupération pour retrouver tout votre historique.",
  recoveryKey: "Clé de récupération",
  restore: "Restaurer",
  restoreFailed: "Cette clé de récupération ne correspond pas.",
  noRecoveryKey: "Je n'ai pas ma clé de récupération",
  noRecoveryKeyIntro: "Cet appareil aura de nouvelles clés. Votre conseiller pourra partager à nouveau l'historique ; en attendant, les anciens messages resteront illisibles ici. Une nouvelle clé de récupération remplacera l'ancienne.",
  continueWithoutKey: "Continuer avec un nouvel appareil",
  recoveryShowTitle: "Votre clé de récupération",
  recoveryShowIntro: "Notez cette clé et gardez-la en lieu sûr. Elle ne sera plus jamais affichée. Elle permet de retrouver vos messages si vous changez d'appareil.",
  recoveryConfirm: "J'ai noté ma clé de récupération",
  continue: "Continuer",
  copy: "Copier",
  copied: "Copié",
  thisDevice: "Cet appareil",
  myDevices: "Mes appareils",
  removeDevice: "Retirer",
  deviceRemoved: "Appareil retiré.",
  waitingReshare: "Cet appareil attend que votre conseiller partage à nouveau l'historique. Les nouveaux messages sont lisibles.",
  keyRequests: "Demandes d'accès à l'historique",
  approve: "Autoriser",
  keyRequestFor: "{name} utilise un nouvel appareil et demande l'accès à l'historique.",
  listNewPhone: "Nouveau téléphone de {name} : il attend votre accord pour recevoir l'historique.",
  approveNewPhoneFor: "Autoriser le nouveau téléphone de {name}",
  deviceWaiting: "Ce téléphone est nouveau : votre conseiller ou conseillère doit l'autoriser pour que vous retrouviez vos anciens messages. Vos messages partiront dès son accord.",
  keyRequestEscrow: "Un appareil d'un superviseur de la structure demande l'accès à l'historique de cette conversation.",
  keysSharedNewDevice: "Clés partagées avec le nouvel appareil de {name}.",
  keysSharedTransfer: "Clés partagées avec l'appareil de {name} (transfert).",
  securityBadEnvelope: "Alerte de sécurité : un appareil de {name} a envoyé une clé qui ne correspond pas à celle de cette conversation. Elle a été écartée.",
  securityBadEnvelopeRecovered: "Alerte de sécurité : un appareil de {name} a envoyé une clé qui ne correspond pas à celle de cette conversation. Elle a été écartée et la bonne clé est utilisée.",
  install: "Installer l'application",
  installed: "Application installée.",
  transfers: "Transferts de bénéficiaires",
  transfer: "Transférer",
  transferTo: "Nouveau conseiller",
  transferMode: "Type de transfert",
  modePermanent: "Définitif",
  modeTemporary: "Temporaire",
  modeTakeBack: "Reprise par le conseiller habituel",
  transferUntil: "Jusqu'au",
  transferDone: "Transfert effectué.",
  counsellor: "Conseiller",
  unknownPerson: "personne non identifiée",
  beneficiary: "Bénéficiaire",
  noStructureList: "La liste de la structure n'est pas disponible sur ce serveur.",
  newMessageTitle: "({n}) Nouveau message",
  keysError: "Chiffrement indisponible : {message}",
  outboxWaiting: "{n} message(s) en attente d'envoi",
  today: "aujourd'hui",
  daySeparator: "{day}",
  dayToday: "Aujourd'hui",
  dayYesterday: "Hier",
  deletedMessage: "(message supprimé)",
  edited: "(modifié)",
  edit: "Modifier",
  delete: "Supprimer",
  editMessage: "Modifier le message",
  deleteConfirm: "Supprimer ce message ? Il sera remplacé par « (message supprimé) » chez vous deux.",
  save: "Enregistrer",
  fieldRequired: "« {label} » est obligatoire.",
  fieldTooLong: "« {label} » dépasse {max} caractères.",
  dateRequired: "Indiquez une date.",
  dateInPast: "Cette date est déjà passée.",
  dateTooFar: "Cette date est à plus de deux ans.",
  endBeforeStart: "La date de fin est avant la date de début.",
  badUrl: "Le lien doit commencer par https:// ou http://.",
  badDuration: "La durée doit être comprise entre 5 et 600 minutes.",
  placeOrVisio: "Indiquez un lieu ou un lien de visio.",
  badTransition: "Ce changement de statut n'est pas possible.",
  fTitle: "Titre",
  fCompany: "Entreprise ou organisme",
  fPlace: "Lieu",
  fUrl: "Lien vers l'offre",
  fNote: "Note (facultatif)",
  fKind: "Type",
  fDescription: "Description",
  fDue: "À réaliser avant le",
  fStatus: "Statut",
  fComment: "Commentaire",
  fDate: "Date",
  fTime: "Heure",
  fDuration: "Durée (minutes)",
  fVisio: "Lien de visio",
  fNoticeText: "Message",
  fStart: "Du",
  fEnd: "Au (inclus)",
  shareOffer: "Partager une offre",
  newAction: "Créer une démarche",
  changeAction: "Modifier la démarche",
  newAppointment: "Fixer un rendez-vous",
  changeAppointment: "Modifier le rendez-vous",
  commentAction: "Commenter la démarche",
  noticeTitle: "Message important",
  noticeIntro: "Affiché en bannière chez chacun de vos bénéficiaires entre ces deux dates (absence, fermeture). Chiffré de bout en bout : une copie par conversation.",
  noticeSend: "Publier",
  noticeLift: "Retirer le message en cours",
  noticeSent: "Message important publié dans {n} conversation(s).",
  noticeLifted: "Message important retiré dans {n} conversation(s).",
  noticeBanner: "Message de votre conseiller",
  noticeUntil: "Jusqu'au {date}",
  noticeLine: "Message important du {start} au {end} : {text}",
  offerLabel: "Offre",
  actionLabel: "Démarche",
  appointmentLabel: "Rendez-vous",
  offer_emploi: "Emploi",
  offer_alternance: "Alternance",
  offer_immersion: "Immersion",
  offer_service_civique: "Service civique",
  offer_evenement: "Événement",
  rdv_individuel: "Entretien individuel",
  rdv_atelier: "Atelier",
  rdv_information_collective: "Information collective",
  status_todo: "À faire",
  status_in_progress: "En cours",
  status_done: "Terminée",
  status_cancelled: "Annulée",
  status_scheduled: "Prévu",
  setStatus_in_progress: "Commencer",
  setStatus_done: "Terminer",
  setStatus_cancelled: "Annuler la démarche",
  setStatus_todo: "Remettre à faire",
  actionReopen: "Rouvrir",
  actionRestore: "Rétablir",
  comment: "Commenter",
  seeOffer: "Voir l'offre",
  joinVisio: "Rejoindre la visio",
  dueOn: "À réaliser avant le {date}",
  overdue: "En retard",
  rdvWhen: "{when} ({duration} min)",
  rdvCancelled: "Rendez-vous annulé",
  cancelAppointment: "Annuler le rendez-vous",
  cancelAppointmentConfirm: "Annuler ce rendez-vous ? {name} en sera informé·e.",
  willCome: "Je serai présent·e",
  cannotCome: "Je ne pourrai pas venir",
  answerYes: "Présence confirmée",
  answerNo: "Ne pourra pas venir",
  answerYesMine: "Vous avez confirmé votre présence.",
  answerNoMine: "Vous avez indiqué ne pas pouvoir venir.",
  noAnswer: "En attente de réponse",
  previewOffer: "Offre : {title}",
  previewAction: "Démarche : {title}",
  previewAppointment: "Rendez-vous : {title}",
  previewNotice: "Message important : {text}",
  eventStatus: "« {title} » : {status}",
  eventComment: "Commentaire sur « {title} » : {text}",
  eventActionChanged: "« {title} » a été modifiée.",
  eventRdvChanged: "Rendez-vous modifié.",
  eventRdvCancelled: "Rendez-vous annulé.",
  eventRdvYes: "{name} sera présent·e au rendez-vous.",
  eventRdvNo: "{name} ne pourra pas venir au rendez-vous.",
  itemsTitle: "Suivi",
  openActions: "Démarches en cours",
  comingAppointments: "Prochains rendez-vous",
  noOpenActions: "Aucune démarche en cours.",
  noComingAppointments: "Aucun rendez-vous prévu.",
  toAnswer: "À répondre",
  toAnswerHint: "Conversations où le bénéficiaire a écrit en dernier",
  noToAnswer: "Aucune conversation en attente de réponse.",
  err_invalid_date: "Date refusée par le serveur (passée ou trop lointaine).",
  err_invalid_transition: "Ce changement n'est plus possible (l'élément a changé entre-temps).",
  err_unknown_item: "Cet élément n'existe pas dans cette conversation.",
  err_forbidden: "Vous ne pouvez pas faire cela.",
  err_not_editable: "Ce message ne peut plus être modifié.",
  err_not_own_message: "Vous ne pouvez modifier que vos propres messages.",
  err_body_too_large: "Contenu trop long.",
  // Attachments (web_client/shared/attach-ui.js).
  attachFile: "Joindre un fichier",
  attachPhoto: "Prendre une photo",
  attachWrongType: "Ce type de fichier n'est pas accepté : PDF, PNG, JPEG ou WEBP uniquement.",
  attachTooLarge: "Fichier trop volumineux : {max} au maximum.",
  attachUnreadableImage: "Cette image n'a pas pu être lue.",
  attachOpen: "Ouvrir",
  attachShow: "Afficher l'image",
  attachDownload: "Télécharger",
  attachExpired: "Pièce jointe expirée",
  attachGone: "Cette pièce jointe n'est plus disponible.",
  attachCorrupt: "La pièce jointe est endommagée ou a été modifiée : elle ne peut pas être ouverte.",
  attachUploading: "Envoi de {name}",
  attachDownloading: "Téléchargement de {name}",
  attachPreview: "Aperçu de {name}",
  attachLabel: "Pièce jointe",
  attachScan: "Faire analyser",
  attachScanning: "Analyse en cours…",
  attachScanClean: "Analyse : aucune menace détectée.",
  attachScanInfected: "Attention, menace détectée : {threat}. N'ouvrez pas ce fichier.",
  attachScanFailed: "L'analyse n'a pas pu être faite. Réessayez plus tard.",
  previewAttachment: "Pièce jointe : {name}",
  err_attachment_too_large: "Fichier trop volumineux (5 Mo au maximum).",
  err_attachment_quota_exceeded: "Espace de stockage des pièces jointes plein : supprimez-en ou attendez leur expiration.",
  err_attachment_rate_limited: "Trop d'envois de fichiers : réessayez dans quelques minutes.",
  err_attachment_not_found: "Le fichier envoyé n'a pas été retrouvé : réessayez l'envoi.",
  err_attachment_expired: "Pièce jointe expirée.",
  err_attachment_mismatch: "Le fichier ne correspond pas au message : réessayez l'envoi.",
};

/** The French text for `key`, with `{name}` placeholders filled from `vars`. */
export function t(key, vars = {}) {
  const text = STRINGS[key];
  if (text === undefined) return key;
  return text.replace(/\{(\w+)\}/g, (_, name) => (name in vars ? String(vars[name]) : `{${name}}`));
}

const TZ = "Europe/Paris";
const timeFmt = new Intl.DateTimeFormat("fr-FR", { hour: "2-digit", minute: "2-digit", timeZone: TZ });
const dateFmt = new Intl.DateTimeFormat("fr-FR", { day: "numeric", month: "short", timeZone: TZ });
const fullFmt = new Intl.DateTimeFormat("fr-FR", { dateStyle: "long", timeStyle: "short", timeZone: TZ });
const dayKeyFmt = new Intl.DateTimeFormat("fr-CA", { timeZone: TZ });

/** "14:05" for today, "3 févr." before (seconds since the epoch). */
export function shortTime(seconds) {
  if (!seconds) return "";
  const d = new Date(seconds * 1000);
  return dayKeyFmt.format(d) === dayKeyFmt.format(new Date()) ? timeFmt.format(d) : dateFmt.format(d);
}

/** Hour and minute. */
export function clock(seconds) {
  return timeFmt.format(new Date(seconds * 1000));
}

/** "26 novembre 2026 à 14:05". */
export function longTime(seconds) {
  return fullFmt.format(new Date(seconds * 1000));
}

/** "à 14:05" today or "le 3 févr." */
export function lastSeenText(seconds) {
  if (!seconds) return t("neverSeen");
  const d = new Date(seconds * 1000);
  const today = dayKeyFmt.format(d) === dayKeyFmt.format(new Date());
  return t("lastSeen", { when: today ? `à ${timeFmt.format(d)}` : `le ${dateFmt.format(d)}` });
}

const weekdayFmt = new Intl.DateTimeFormat("fr-FR", { weekday: "long", day: "numeric", month: "long", timeZone: TZ });
const weekdayYearFmt = new Intl.DateTimeFormat("fr-FR", { weekday: "long", day: "numeric", month: "long", year: "numeric", timeZone: TZ });
const dateLongFmt = new Intl.DateTimeFormat("fr-FR", { day: "numeric", month: "long", year: "numeric", timeZone: TZ });
const yearFmt = new Intl.DateTimeFormat("fr-FR", { year: "numeric", timeZone: TZ });

/** The day of `seconds` in Europe/Paris, as "2026-12-01" (to group messages by day). */
export function dayKey(seconds) {
  return dayKeyFmt.format(new Date(seconds * 1000));
}

/** "Aujourd'hui", "Hier", "lundi 30 novembre" (with the year if not this year). */
export function dayLabel(seconds, now = Date.now() / 1000) {
  const key = dayKey(seconds);
  if (key === dayKey(now)) return t("dayToday");
  if (key === dayKey(now - 86400)) return t("dayYesterday");
  const d = new Date(seconds * 1000);
  const sameYear = yearFmt.format(d) === yearFmt.format(new Date(now * 1000));
  return (sameYear ? weekdayFmt : weekdayYearFmt).format(d);
}

/** "3 décembre 2026". */
export function dateLong(seconds) {
  return dateLongFmt.format(new Date(seconds * 1000));
}

/** "jeudi 3 décembre à 14:30". */
export function whenText(seconds) {
  const d = new Date(seconds * 1000);
  return `${weekdayFmt.format(d)} à ${timeFmt.format(d)}`;
}
